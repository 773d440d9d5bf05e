#!/usr/bin/env python3
"""An aiosmtpd server for internal/submit's interoperability test.

It listens on 127.0.0.1 on a free port with STARTTLS required before AUTH
and MAIL, AUTH PLAIN and LOGIN for one user, SMTPUTF8 and 8BITMIME. It
prints "READY <port>" on stdout once listening, then one JSON object per
line for each message it accepts. It exits when its stdin is closed (the
Go test ends) or after --lifetime seconds, whichever comes first.
"""

import argparse
import asyncio
import json
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    async def handle_DATA(self, server, session, envelope):
        record = {
            "helo": session.host_name,
            "tls": session.ssl is not None,
            "auth_mechanism": getattr(session, "postie_mechanism", None),
            "auth_user": session.auth_data,
            "mail_from": envelope.mail_from,
            "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos,
            "rcpt_options": envelope.rcpt_options,
            "smtp_utf8": envelope.smtp_utf8,
            "content": envelope.content.decode("utf-8", "replace"),
        }
        print(json.dumps(record), flush=True)
        return "250 2.0.0 Ok: queued as AIOSMTPD"


def make_authenticator(user, password):
    def authenticator(server, session, envelope, mechanism, auth_data):
        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user
            and auth_data.password == password
        ):
            session.postie_mechanism = mechanism
            return AuthResult(success=True, auth_data=user.decode())
        return AuthResult(success=False, handled=False)

    return authenticator


async def serve(args):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    loop = asyncio.get_running_loop()
    authenticator = make_authenticator(args.user.encode(), args.password.encode())

    def factory():
        return SMTP(
            Handler(),
            hostname="mx.aiosmtpd.test",
            tls_context=context,
            require_starttls=True,
            auth_require_tls=True,
            authenticator=authenticator,
            enable_SMTPUTF8=True,
            loop=loop,
        )

    server = await loop.create_server(factory, host="127.0.0.1", port=0)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    try:
        await asyncio.wait_for(
            loop.run_in_executor(None, sys.stdin.read), timeout=args.lifetime
        )
    except asyncio.TimeoutError:
        pass
    server.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--lifetime", type=float, default=120)
    args = parser.parse_args()
    asyncio.run(serve(args))
    sys.stdout.flush()
    # The stdin reader thread may still be blocked: do not wait for it.
    os._exit(0)


if __name__ == "__main__":
    main()
