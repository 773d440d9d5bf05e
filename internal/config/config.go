// Package config reads Postie's TOML configuration file.
//
// The file is strict: a key that Postie does not know, or a known key with
// the wrong case ("Hostname" for "hostname"), is an error naming the key and
// its line, because a misspelt "pasword_file" that is silently ignored sends
// mail unauthenticated or not at all. Type errors name the key and line too.
// Every key has a default, so a missing file is a valid configuration: mail
// is queued in the default spool and stays there until a smarthost is set.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultMaxMessageSize is the size limit when the config sets none.
const DefaultMaxMessageSize = 256 << 20

// DefaultPath is used when neither -C nor $POSTIE_CONFIG names a file.
const DefaultPath = "/etc/postie/postie.toml"

// Config is the whole configuration file.
type Config struct {
	// Hostname is the EHLO name, the Message-ID domain and the domain
	// given to unqualified addresses. Default: the system's host name.
	Hostname string `toml:"hostname"`
	// SpoolDir holds the queue. Default: /var/spool/postie when that
	// directory exists and is writable by us, else a per-user directory
	// (see DefaultSpoolDir).
	SpoolDir string `toml:"spool_dir"`
	// MaxMessageSize is the largest message accepted, in bytes (0: no
	// limit). Default: 256 MiB.
	MaxMessageSize int64 `toml:"max_message_size"`
	// AliasesFile is an aliases(5) file consulted after [aliases], such as
	// /etc/aliases. Empty: none.
	AliasesFile string `toml:"aliases_file"`

	Smarthost Smarthost `toml:"smarthost"`
	// Fallback smarthosts are tried in order when the smarthost cannot
	// be reached or answers 4xx.
	Fallback []Smarthost `toml:"fallback"`
	// Route selects other smarthosts by envelope sender.
	Route   []Route           `toml:"route"`
	DKIM    DKIM              `toml:"dkim"`
	Queue   Queue             `toml:"queue"`
	Aliases map[string]string `toml:"aliases"`
	Rewrite Rewrite           `toml:"rewrite"`
	Limits  Limits            `toml:"limits"`
	Log     Log               `toml:"log"`

	// Path is the file the configuration was read from ("" when defaults).
	Path string `toml:"-"`
}

// Smarthost is the server all mail is relayed through.
type Smarthost struct {
	Address         string   `toml:"address"`
	TLS             string   `toml:"tls"`
	Username        string   `toml:"username"`
	Password        string   `toml:"password"`
	PasswordFile    string   `toml:"password_file"`
	PasswordCommand []string `toml:"password_command"`
	// Auth forces one SASL mechanism; empty chooses the strongest offered.
	Auth           string `toml:"auth"`
	CAFile         string `toml:"ca_file"`
	TLSFingerprint string `toml:"tls_fingerprint"`
	TLSMinVersion  string `toml:"tls_min_version"`
	TLSCertFile    string `toml:"tls_cert_file"`
	TLSKeyFile     string `toml:"tls_key_file"`
	// AllowInsecureAuth permits AUTH without TLS, and only to a loopback
	// address: for a local relay that listens on 127.0.0.1 without TLS.
	AllowInsecureAuth bool     `toml:"allow_insecure_auth"`
	ConnectTimeout    Duration `toml:"connect_timeout"`
	CommandTimeout    Duration `toml:"command_timeout"`
	DataTimeout       Duration `toml:"data_timeout"`
	// OAuth2, when set, authenticates with XOAUTH2 or OAUTHBEARER using
	// access tokens obtained with a refresh token.
	OAuth2 *OAuth2 `toml:"oauth2"`
}

// Route sends mail from some senders through other smarthosts (another
// account, another provider). The first route whose senders match the
// envelope sender wins; mail matching no route uses [smarthost].
type Route struct {
	// Senders are patterns: an address ("alerts@example.com"), a domain
	// ("example.org" or "@example.org"), or a glob ("*@*.example.org").
	Senders   []string    `toml:"senders"`
	Smarthost Smarthost   `toml:"smarthost"`
	Fallback  []Smarthost `toml:"fallback"`
}

// Matches reports whether the envelope sender matches the route.
func (r *Route) Matches(sender string) bool {
	sender = strings.ToLower(sender)
	at := strings.LastIndex(sender, "@")
	domain := sender[at+1:]
	for _, p := range r.Senders {
		p = strings.ToLower(strings.TrimSpace(p))
		switch {
		case strings.ContainsAny(p, "*?["):
			if ok, _ := path.Match(p, sender); ok {
				return true
			}
		case strings.HasPrefix(p, "@"):
			if at >= 0 && domain == p[1:] {
				return true
			}
		case strings.Contains(p, "@"):
			if sender == p {
				return true
			}
		default:
			if at >= 0 && domain == p {
				return true
			}
		}
	}
	return false
}

// OAuth2 is the [smarthost.oauth2] table.
type OAuth2 struct {
	TokenURL         string   `toml:"token_url"`
	ClientID         string   `toml:"client_id"`
	ClientSecretFile string   `toml:"client_secret_file"`
	RefreshTokenFile string   `toml:"refresh_token_file"`
	Scopes           []string `toml:"scopes"`
	CAFile           string   `toml:"ca_file"`
}

// Configured reports whether a smarthost address was given.
func (s *Smarthost) Configured() bool { return s.Address != "" }

// DKIM configures signing at delivery. The top-level domain/selector/
// private_key_file form one key; [[dkim.key]] tables add more (several
// domains, or an RSA and an Ed25519 key for one domain).
type DKIM struct {
	Domain         string    `toml:"domain"`
	Selector       string    `toml:"selector"`
	PrivateKeyFile string    `toml:"private_key_file"`
	Expiration     Duration  `toml:"expiration"`
	Key            []DKIMKey `toml:"key"`
}

// DKIMKey is one signing key.
type DKIMKey struct {
	Domain         string   `toml:"domain"`
	Selector       string   `toml:"selector"`
	PrivateKeyFile string   `toml:"private_key_file"`
	Expiration     Duration `toml:"expiration"`
}

// Keys returns every configured key, the top-level one first.
func (d *DKIM) Keys() []DKIMKey {
	var keys []DKIMKey
	if d.Domain != "" || d.Selector != "" || d.PrivateKeyFile != "" {
		keys = append(keys, DKIMKey{d.Domain, d.Selector, d.PrivateKeyFile, d.Expiration})
	}
	return append(keys, d.Key...)
}

// Queue configures the queue runner.
type Queue struct {
	// Deliver says what happens after a message is queued: "background"
	// (a detached runner delivers it at once), "foreground" (sendmail
	// waits for the attempt) or "queue" (nothing until a flush).
	Deliver string `toml:"deliver"`
	// MaxAge is how long a message is retried before it is bounced.
	MaxAge Duration `toml:"max_age"`
	// RetryMin and RetryMax bound the exponential backoff.
	RetryMin Duration `toml:"retry_min"`
	RetryMax Duration `toml:"retry_max"`
	// Connections is the number of parallel connections to the smarthost.
	Connections int `toml:"connections"`
	// RetryUncertain retries a message whose delivery is uncertain (the
	// connection died after the final dot) instead of holding it.
	RetryUncertain bool `toml:"retry_uncertain"`
	// BounceTo receives a copy of every bounce, and bounces that cannot be
	// returned (their sender was the null sender).
	BounceTo string `toml:"bounce_to"`
}

// Rewrite configures rewriting of mail from local users. Off by default.
type Rewrite struct {
	// Local maps a local name (bare, or name@hostname) to an address;
	// "*" matches any local name.
	Local map[string]string `toml:"local"`
	// From forces the envelope sender and From of every message to this
	// address, keeping the author in Reply-To (for smarthosts that only
	// accept their account's address).
	From string `toml:"from"`
}

// Limits cap what each local user may submit, against a compromised site
// on a shared host sending spam. Zero means unlimited. A submission over a
// limit is queued held (reason "rate limit"), so nothing is lost; with
// Hard, sendmail refuses it with exit 75 instead.
type Limits struct {
	MessagesPerHour      int  `toml:"messages_per_hour"`
	RecipientsPerMessage int  `toml:"recipients_per_message"`
	RecipientsPerHour    int  `toml:"recipients_per_hour"`
	Hard                 bool `toml:"hard"`
	// User overrides the limits for one user, by name or numeric uid:
	// [limits.user.www-data] or [limits.user.33].
	User map[string]UserLimits `toml:"user"`
}

// UserLimits overrides some limits for one user; unset keys inherit.
type UserLimits struct {
	MessagesPerHour      *int `toml:"messages_per_hour"`
	RecipientsPerMessage *int `toml:"recipients_per_message"`
	RecipientsPerHour    *int `toml:"recipients_per_hour"`
}

// For returns the limits of a user.
func (l *Limits) For(uid int, user string) (msgsHour, rcptsMsg, rcptsHour int) {
	msgsHour, rcptsMsg, rcptsHour = l.MessagesPerHour, l.RecipientsPerMessage, l.RecipientsPerHour
	u, ok := l.User[user]
	if !ok {
		u, ok = l.User[strconv.Itoa(uid)]
	}
	if ok {
		if u.MessagesPerHour != nil {
			msgsHour = *u.MessagesPerHour
		}
		if u.RecipientsPerMessage != nil {
			rcptsMsg = *u.RecipientsPerMessage
		}
		if u.RecipientsPerHour != nil {
			rcptsHour = *u.RecipientsPerHour
		}
	}
	return
}

// Log configures the delivery log.
type Log struct {
	// Target is "syslog" (default; stderr when syslog is absent) or "stderr".
	Target string `toml:"target"`
}

// Duration is a time.Duration written as a Go duration string ("5m", "120h").
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration (like \"30s\", \"5m\", \"120h\"): %q", b)
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", b)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Error is a configuration error; the programs exit 78 (EX_CONFIG) on it.
type Error struct {
	Path string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	switch {
	case e.Path != "" && e.Line > 0:
		return fmt.Sprintf("config %s line %d: %s", e.Path, e.Line, e.Msg)
	case e.Path != "":
		return fmt.Sprintf("config %s: %s", e.Path, e.Msg)
	}
	return "config: " + e.Msg
}

// Defaults returns the configuration used when no file exists.
func Defaults() *Config {
	c := &Config{MaxMessageSize: DefaultMaxMessageSize}
	c.fill()
	return c
}

// Load reads the file at path. A missing file at the default path (or at
// $POSTIE_CONFIG when explicit is false) yields the defaults; a missing
// file named explicitly with -C is an error.
func Load(path string, explicit bool) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return Defaults(), nil
	}
	if err != nil {
		return nil, &Error{Path: path, Msg: fmt.Sprintf("cannot read: %v", errors.Unwrap(err))}
	}
	c, err := Parse(path, string(data))
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Parse parses a configuration from text; path is used in errors.
func Parse(path, text string) (*Config, error) {
	// Defaults that an explicit zero may override are set before
	// decoding; the others are filled in afterwards.
	c := &Config{MaxMessageSize: DefaultMaxMessageSize}
	md, err := toml.Decode(text, c)
	if err != nil {
		var pe toml.ParseError
		if ppe := (*toml.ParseError)(nil); errors.As(err, &ppe) {
			pe = *ppe
		}
		if errors.As(err, &pe) || pe.Message != "" {
			msg := pe.Message
			if pe.LastKey != "" && !strings.Contains(msg, pe.LastKey) {
				msg = fmt.Sprintf("key %q: %s", pe.LastKey, msg)
			}
			return nil, &Error{Path: path, Line: pe.Position.Line, Msg: msg}
		}
		// Type errors are plain errors: "toml: line 2 (last key
		// "queue.connections"): incompatible types: ...".
		if m := typeErrRE().FindStringSubmatch(err.Error()); m != nil {
			line, _ := strconv.Atoi(m[1])
			return nil, &Error{Path: path, Line: line, Msg: fmt.Sprintf("key %q: %s", m[2], m[3])}
		}
		return nil, &Error{Path: path, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	}
	// BurntSushi/toml matches struct fields case-insensitively and reports
	// only keys that matched nothing; check every key's exact spelling.
	known := knownKeys(reflect.TypeOf(Config{}))
	for _, k := range md.Keys() {
		if !keyKnown(known, k) {
			name := k.String()
			msg := fmt.Sprintf("unknown key %q", name)
			if s := suggest(known, k); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			return nil, &Error{Path: path, Line: keyLine(text, k), Msg: msg}
		}
	}
	c.Path = path
	c.fill()
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// typeErrRE parses the TOML library's type errors. It is compiled on first
// use: only a broken config needs it, and every sendmail run would
// otherwise compile it at start.
var typeErrRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)
})

// knownKeys maps each valid dotted key path to true. A path ending in ".*"
// accepts any single key below it (maps such as [aliases]).
func knownKeys(t reflect.Type) map[string]bool {
	known := map[string]bool{}
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("toml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			p := tag
			if prefix != "" {
				p = prefix + "." + tag
			}
			known[p] = true
			ft := f.Type
			switch {
			case ft.Kind() == reflect.Struct && ft != reflect.TypeOf(Duration{}):
				walk(p, ft)
			case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
				walk(p, ft.Elem())
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(p, ft.Elem())
			case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
				known[p+".*"] = true
				walk(p+".*", ft.Elem())
			case ft.Kind() == reflect.Map:
				known[p+".*"] = true
			}
		}
	}
	walk("", t)
	return known
}

// keyKnown matches k against the known paths, where "*" stands for any
// one component (a map key such as an alias or user name).
func keyKnown(known map[string]bool, k toml.Key) bool {
	if known[k.String()] {
		return true
	}
	for p := range known {
		parts := strings.Split(p, ".")
		if len(parts) != len(k) {
			continue
		}
		ok := true
		for i := range parts {
			if parts[i] != "*" && parts[i] != k[i] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// suggest returns the known key that differs from k only in case.
func suggest(known map[string]bool, k toml.Key) string {
	for p := range known {
		if strings.EqualFold(p, k.String()) {
			return p
		}
	}
	return ""
}

// keyLine finds the line where key k is written, for error messages; the
// TOML library does not expose positions of decoded keys. It tracks table
// headers and finds the key's last component within its table.
func keyLine(text string, k toml.Key) int {
	table := ""
	want := toml.Key(k[:len(k)-1]).String()
	last := k[len(k)-1]
	for i, line := range strings.Split(text, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "[") {
			name := strings.Trim(l, "[] \t")
			if j := strings.Index(name, "#"); j >= 0 {
				name = strings.TrimSpace(strings.Trim(name[:j], "[] \t"))
			}
			table = name
			if table == k.String() {
				return i + 1
			}
			continue
		}
		eq := strings.Index(l, "=")
		if eq < 0 {
			continue
		}
		key := strings.Trim(strings.TrimSpace(l[:eq]), `"'`)
		full := key
		if table != "" {
			full = table + "." + key
		}
		if full == k.String() || (table == want && key == last) {
			return i + 1
		}
	}
	return 0
}

func (c *Config) fill() {
	if c.Hostname == "" {
		c.Hostname = systemHostname()
	}
	if c.SpoolDir == "" {
		c.SpoolDir = DefaultSpoolDir()
	}
	c.Smarthost.fill()
	for i := range c.Fallback {
		c.Fallback[i].fill()
	}
	for i := range c.Route {
		c.Route[i].Smarthost.fill()
		for j := range c.Route[i].Fallback {
			c.Route[i].Fallback[j].fill()
		}
	}
	if c.Queue.Deliver == "" {
		c.Queue.Deliver = "background"
	}
	if c.Queue.MaxAge.Duration == 0 {
		c.Queue.MaxAge.Duration = 5 * 24 * time.Hour
	}
	if c.Queue.RetryMin.Duration == 0 {
		c.Queue.RetryMin.Duration = time.Minute
	}
	if c.Queue.RetryMax.Duration == 0 {
		c.Queue.RetryMax.Duration = time.Hour
	}
	if c.Queue.Connections == 0 {
		c.Queue.Connections = 4
	}
	if c.Log.Target == "" {
		c.Log.Target = "syslog"
	}
}

func (s *Smarthost) fill() {
	if s.TLS == "" {
		s.TLS = "starttls"
	}
	if s.TLSMinVersion == "" {
		s.TLSMinVersion = "1.2"
	}
	if s.ConnectTimeout.Duration == 0 {
		s.ConnectTimeout.Duration = 30 * time.Second
	}
	if s.CommandTimeout.Duration == 0 {
		// RFC 5321 4.5.3.2 gives 5 minutes for most replies.
		s.CommandTimeout.Duration = 5 * time.Minute
	}
	if s.DataTimeout.Duration == 0 {
		// RFC 5321 4.5.3.2.6: 10 minutes for the reply to the final dot.
		s.DataTimeout.Duration = 10 * time.Minute
	}
}

func (c *Config) validate() error {
	bad := func(key, format string, args ...any) error {
		return &Error{Path: c.Path, Line: keyLine(c.rawText(), strings.Split(key, ".")), Msg: fmt.Sprintf("%s: %s", key, fmt.Sprintf(format, args...))}
	}
	if strings.ContainsAny(c.Hostname, " \t\r\n<>@,;") {
		return bad("hostname", "%q is not a host name", c.Hostname)
	}
	if err := c.validateSmarthost("smarthost", &c.Smarthost, bad); err != nil {
		return err
	}
	for i := range c.Fallback {
		if c.Fallback[i].Address == "" {
			return bad("fallback", "fallback %d has no address", i+1)
		}
		if err := c.validateSmarthost("fallback", &c.Fallback[i], bad); err != nil {
			return err
		}
	}
	for i := range c.Route {
		r := &c.Route[i]
		if len(r.Senders) == 0 || r.Smarthost.Address == "" {
			return bad("route", "route %d needs senders and [route.smarthost] address", i+1)
		}
		if err := c.validateSmarthost("route.smarthost", &r.Smarthost, bad); err != nil {
			return err
		}
		for j := range r.Fallback {
			if err := c.validateSmarthost("route.fallback", &r.Fallback[j], bad); err != nil {
				return err
			}
		}
	}
	if !slices.Contains([]string{"background", "foreground", "queue"}, c.Queue.Deliver) {
		return bad("queue.deliver", "%q: must be \"background\", \"foreground\" or \"queue\"", c.Queue.Deliver)
	}
	if c.Queue.Connections < 1 || c.Queue.Connections > 64 {
		return bad("queue.connections", "%d: must be between 1 and 64", c.Queue.Connections)
	}
	if c.Queue.RetryMin.Duration > c.Queue.RetryMax.Duration {
		return bad("queue.retry_min", "retry_min %s is above retry_max %s", c.Queue.RetryMin, c.Queue.RetryMax)
	}
	if !slices.Contains([]string{"syslog", "stderr"}, c.Log.Target) {
		return bad("log.target", "%q: must be \"syslog\" or \"stderr\"", c.Log.Target)
	}
	for i, k := range c.DKIM.Keys() {
		if k.Domain == "" || k.Selector == "" || k.PrivateKeyFile == "" {
			return bad("dkim", "key %d needs domain, selector and private_key_file", i+1)
		}
	}
	for name, addr := range c.Aliases {
		if strings.ContainsAny(name+addr, "\r\n\x00") {
			return bad("aliases", "alias %q contains a line break", name)
		}
	}
	return nil
}

func (c *Config) validateSmarthost(prefix string, sh *Smarthost, bad func(key, format string, args ...any) error) error {
	if !slices.Contains([]string{"starttls", "implicit", "none"}, sh.TLS) {
		return bad(prefix+".tls", "%q: must be \"starttls\", \"implicit\" or \"none\"", sh.TLS)
	}
	if !slices.Contains([]string{"1.2", "1.3"}, sh.TLSMinVersion) {
		return bad(prefix+".tls_min_version", "%q: must be \"1.2\" or \"1.3\"", sh.TLSMinVersion)
	}
	if a := sh.Address; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return bad(prefix+".address", "%q is not host:port", a)
		}
	}
	n := 0
	if sh.Password != "" {
		n++
	}
	if sh.PasswordFile != "" {
		n++
	}
	if len(sh.PasswordCommand) > 0 {
		n++
	}
	if n > 1 {
		return bad(prefix+".password", "give only one of password, password_file and password_command")
	}
	if o := sh.OAuth2; o != nil {
		if o.TokenURL == "" || o.ClientID == "" || o.RefreshTokenFile == "" {
			return bad(prefix+".oauth2", "token_url, client_id and refresh_token_file are required")
		}
		if !strings.HasPrefix(o.TokenURL, "https://") {
			return bad(prefix+".oauth2.token_url", "%q must be an https:// URL", o.TokenURL)
		}
		if sh.Username == "" {
			return bad(prefix+".username", "OAuth2 needs the account's user name")
		}
	}
	if (sh.TLSCertFile == "") != (sh.TLSKeyFile == "") {
		return bad(prefix+".tls_cert_file", "tls_cert_file and tls_key_file go together")
	}
	return nil
}

// rawText rereads the file for line numbers in validation errors; it is
// only called on the error path.
func (c *Config) rawText() string {
	if c.Path == "" {
		return ""
	}
	b, _ := os.ReadFile(c.Path)
	return string(b)
}

func systemHostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// DefaultSpoolDir is /var/spool/postie when it exists (the packaged,
// system-wide queue), else $XDG_STATE_HOME/postie or ~/.local/state/postie,
// so that an unprivileged user without a config still has a queue.
func DefaultSpoolDir() string {
	const system = "/var/spool/postie"
	if st, err := os.Stat(system); err == nil && st.IsDir() {
		return system
	}
	if os.Geteuid() != os.Getuid() || os.Getegid() != os.Getgid() {
		// With raised privileges the environment is the caller's to
		// choose: never let it pick where we write.
		return system
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return d + "/postie"
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return h + "/.local/state/postie"
	}
	return system
}

// Locate returns the config file to read: -C when given, else
// $POSTIE_CONFIG, else DefaultPath. explicit reports whether the user
// named it (a missing explicit file is an error). A program running with
// raised privileges for an ordinary user ignores $POSTIE_CONFIG and
// refuses -C, so that nobody can point it at a config of their own.
func Locate(flagC string, privileged, realRoot bool, getenv func(string) string) (path string, explicit bool, err error) {
	if privileged && !realRoot {
		if flagC != "" {
			return "", false, errors.New("-C is not allowed: this program runs with raised privileges")
		}
		return DefaultPath, false, nil
	}
	if flagC != "" {
		return flagC, true, nil
	}
	if p := getenv("POSTIE_CONFIG"); p != "" {
		return p, true, nil
	}
	return DefaultPath, false, nil
}
