package address

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Aliases maps local names to address lists, as /etc/aliases does. Lookup
// is case-insensitive on the name.
type Aliases map[string][]string

// maxAliasDepth bounds alias expansion; aliases(5) loops are configuration
// mistakes, not reasons to spin.
const maxAliasDepth = 16

// NewAliases builds Aliases from the config's [aliases] table, whose values
// are comma-separated address lists.
func NewAliases(m map[string]string) (Aliases, error) {
	a := Aliases{}
	for name, v := range m {
		if err := a.add(name, v, "[aliases]"); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (a Aliases) add(name, v, where string) error {
	name = strings.ToLower(strings.TrimSpace(name))
	var targets []string
	for _, t := range splitTop(v) {
		t = strings.TrimSpace(t)
		switch {
		case t == "":
			continue
		case strings.HasPrefix(t, "|"), strings.HasPrefix(t, `"|`):
			return fmt.Errorf("%s: alias %q delivers to a pipe (%s); Postie only relays to a smarthost and never runs commands", where, name, t)
		case strings.HasPrefix(t, ":include:"):
			return fmt.Errorf("%s: alias %q uses :include:, which Postie does not support; list the addresses instead", where, name)
		case strings.HasPrefix(t, "/"):
			return fmt.Errorf("%s: alias %q delivers to a file (%s); Postie only relays to a smarthost", where, name, t)
		}
		if strings.ContainsAny(t, "\r\n\x00") {
			return fmt.Errorf("%s: alias %q: %w", where, name, ErrLineBreak)
		}
		targets = append(targets, t)
	}
	if _, dup := a[name]; dup {
		// The config's table wins over the aliases file.
		return nil
	}
	a[name] = targets
	return nil
}

// LoadFile adds the entries of an aliases(5) file: "name: addr, addr",
// continuation lines starting with white space, "#" comments. Entries
// already present (from the config) are kept.
func (a Aliases) LoadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("aliases: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var name, value string
	startLine, lineNo := 0, 0
	flush := func() error {
		if name == "" {
			return nil
		}
		err := a.add(name, value, fmt.Sprintf("%s line %d", path, startLine))
		name, value = "", ""
		return err
	}
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "#") || strings.TrimSpace(line) == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if name == "" {
				return fmt.Errorf("aliases: %s line %d: continuation line without an alias", path, lineNo)
			}
			value += " " + strings.TrimSpace(line)
			continue
		}
		if err := flush(); err != nil {
			return fmt.Errorf("aliases: %w", err)
		}
		i := strings.Index(line, ":")
		if i <= 0 {
			return fmt.Errorf("aliases: %s line %d: expected \"name: address, ...\"", path, lineNo)
		}
		name, value, startLine = line[:i], line[i+1:], lineNo
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("aliases: %s: %w", path, err)
	}
	if err := flush(); err != nil {
		return fmt.Errorf("aliases: %w", err)
	}
	return nil
}

// Names returns the alias names, sorted.
func (a Aliases) Names() []string {
	n := make([]string, 0, len(a))
	for k := range a {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Resolver turns recipients into envelope addresses: bare local names and
// name@hostname are expanded through aliases (recursively); bare names
// without an alias are qualified with the host name.
type Resolver struct {
	Aliases  Aliases
	Hostname string
}

// LocalDomain reports whether domain names this host: the host name, its
// first label, "localhost" or "localhost.localdomain".
func (r *Resolver) LocalDomain(domain string) bool {
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	h := strings.ToLower(r.Hostname)
	short, _, _ := strings.Cut(h, ".")
	return d == h || d == short || d == "localhost" || d == "localhost.localdomain"
}

// Qualify appends "@hostname" to a bare local name.
func (r *Resolver) Qualify(addr string) string {
	if strings.Contains(addr, "@") {
		return addr
	}
	return addr + "@" + r.Hostname
}

// Expand resolves a list of addresses into envelope recipients, removing
// duplicates (case-insensitively on the domain) and keeping first-seen
// order.
func (r *Resolver) Expand(addrs []Address) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	var walk func(a Address, depth int, via string) error
	walk = func(a Address, depth int, via string) error {
		name, local := a.Addr, a.Local()
		if !local && r.LocalDomain(Domain(a.Addr)) {
			// name@hostname and name@localhost are this host's local
			// names too (MAILTO=root@web1.example.com, fail2ban's
			// root@localhost): aliases apply to them as well, and
			// without an alias they are qualified with the host name,
			// since no smarthost can deliver to localhost.
			name, local = LocalPart(a.Addr), true
		}
		if local {
			if targets, ok := r.Aliases[strings.ToLower(name)]; ok {
				if depth >= maxAliasDepth {
					return fmt.Errorf("alias %q: expansion too deep (a loop?)", via)
				}
				for _, t := range targets {
					ta, err := Parse(t)
					if err != nil {
						return fmt.Errorf("alias %q: %w", name, err)
					}
					// An alias naming itself (root: root) means the
					// local name itself, qualified.
					if ta.Local() && strings.EqualFold(ta.Addr, name) {
						add(&out, seen, r.Qualify(ta.Addr))
						continue
					}
					if err := walk(ta, depth+1, name); err != nil {
						return err
					}
				}
				return nil
			}
		}
		if local {
			add(&out, seen, r.Qualify(name))
		} else {
			add(&out, seen, a.Addr)
		}
		return nil
	}
	for _, a := range addrs {
		if err := walk(a, 0, a.Addr); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func add(out *[]string, seen map[string]bool, addr string) {
	key := LocalPart(addr) + "@" + strings.ToLower(Domain(addr))
	if seen[key] {
		return
	}
	seen[key] = true
	*out = append(*out, addr)
}
