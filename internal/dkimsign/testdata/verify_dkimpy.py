"""Verify every DKIM-Signature of each message with dkimpy (Debian
python3-dkim), taking public keys from a file instead of DNS.

usage: python3 verify_dkimpy.py KEYS MESSAGE...

KEYS has one line per key: "selector._domainkey.domain<TAB>TXT value".
For each signature of each message, prints one line:

    path<TAB>index<TAB>s=<TAB>d=<TAB>pass|fail<TAB>detail
"""

import logging
import sys

import dkim


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def main():
    keys = {}
    with open(sys.argv[1], encoding="ascii") as f:
        for line in f:
            name, value = line.rstrip("\n").split("\t", 1)
            keys[name.lower()] = value.encode("ascii")

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        return keys.get(name.rstrip(".").lower())  # None: no such key

    collect = Collect()
    logger = logging.getLogger("verify_dkimpy")
    logger.setLevel(logging.INFO)
    logger.addHandler(collect)

    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            msg = f.read()
        n = sum(1 for k, _ in dkim.DKIM(msg).headers if k.lower() == b"dkim-signature")
        if n == 0:
            print("\t".join([path, "-", "-", "-", "none", "no DKIM-Signature"]))
        for idx in range(n):
            collect.messages.clear()
            d = dkim.DKIM(msg, logger=logger, minkey=1024)
            try:
                ok = d.verify(idx=idx, dnsfunc=dnsfunc)
                detail = "; ".join(collect.messages)
            except dkim.DKIMException as e:
                ok, detail = False, str(e)
            sel = (d.selector or b"").decode("ascii", "replace")
            dom = (d.domain or b"").decode("ascii", "replace")
            detail = detail.replace("\t", " ").replace("\n", " ")[:300]
            print("\t".join([path, str(idx), sel, dom, "pass" if ok else "fail", detail]))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
