// Package packaging_test builds Postie's .deb with `make deb`, installs it
// on the machine the test runs on, and checks as real local users the
// privilege model of packaging/README.md: every user can send mail, none
// can read the smarthost password, the DKIM key or anyone's queued mail,
// and none can point the setgid sendmail at a configuration of their own.
// It then purges the package and checks that nothing is left.
//
// It changes the machine, so it runs only as root (CI runs as root on a
// clean Debian) and only where dpkg and apt-get exist. If an MTA such as
// exim4 is installed, installing Postie replaces it (that is checked too)
// and the test installs it again at the end, with apt-get. Set
// POSTIE_SKIP_PACKAGE_TEST=1 to skip it.
package packaging_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	sendmailPath = "/usr/sbin/sendmail"
	mailqPath    = "/usr/bin/mailq"
	spoolDir     = "/var/spool/postie"
	etcDir       = "/etc/postie"
	// aptLock makes apt-get wait for another apt or dpkg run (other
	// tests install their packages too) instead of failing at once.
	aptLock = "DPkg::Lock::Timeout=600"
)

// Users the test creates, and removes at the end.
var testUsers = []string{"postie-test-a", "postie-test-b"}

func TestDebianPackage(t *testing.T) {
	if os.Getenv("POSTIE_SKIP_PACKAGE_TEST") != "" {
		t.Skip("POSTIE_SKIP_PACKAGE_TEST is set")
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: this test installs the .deb on this machine (CI runs it as root)")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "dpkg-statoverride", "apt-get", "apt-mark", "runuser", "useradd", "userdel", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: this test needs a Debian system with dpkg and apt-get", tool)
		}
	}
	if testing.Short() {
		t.Skip("-short: this test builds and installs a package")
	}
	if dpkgStatus("postie") != "" {
		t.Skip("the postie package is installed on this machine: the test would purge it, queue and configuration included")
	}
	for _, p := range []string{spoolDir, etcDir} {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("%s exists without the postie package: the test's purge would delete it", p)
		}
	}

	root, err := filepath.Abs("../..")
	tcheck(t, err, "repository root")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s has no go.mod: %v", root, err)
	}
	work := t.TempDir()
	start := time.Now()

	deb := buildDeb(t, root, work)
	t.Logf("make deb: %s (%s)", filepath.Base(deb), time.Since(start).Round(time.Second))
	checkControl(t, deb)
	checkArchive(t, deb)
	checkScripts(t, root)

	h := &host{}
	t.Cleanup(func() { h.restore(t) })
	h.createUsers(t)
	step := time.Now()
	h.install(t, deb)
	t.Logf("apt-get install: %s", time.Since(step).Round(time.Second))

	checkInstalled(t)
	checkPostinstIdempotent(t)
	if systemdRunning() {
		// The path unit would deliver while the checks below look at the
		// queue; they stop it, and checkPathUnit starts it again.
		run(t, "systemctl", "stop", "postie-flush.path", "postie-flush.timer")
	}

	sink := startSink(t, root, work)
	configure(t, sink)
	out, code := runAs("root", "", nil, mailqPath, "--check")
	if code != 0 {
		t.Errorf("mailq --check as root: exit %d, want 0:\n%s", code, out)
	}

	evil := writeEvilConfig(t, work)
	sent := submitAsUsers(t, evil)
	checkQueueAsRoot(t, sent)
	checkUsersLockedOut(t, sent, evil)

	// The runner, the way the cron line of packaging/README.md runs it
	// (and postie-flush.service does: same user, same command).
	out, code = runAs("postie", "", nil, mailqPath, "-q", "--due")
	if code != 0 {
		t.Errorf("mailq -q --due as postie: exit %d, want 0:\n%s", code, out)
	}
	checkDelivered(t, sink, sent)

	if systemdRunning() {
		checkPathUnit(t, sink)
	} else {
		t.Log("systemd is not running: the path unit's trigger is not exercised (delivery ran as cron would run it)")
	}

	step = time.Now()
	h.removeAndPurge(t)
	t.Logf("remove and purge: %s", time.Since(step).Round(time.Second))
	checkPurged(t, h)
	t.Logf("total: %s", time.Since(start).Round(time.Second))
}

// buildDeb runs `make deb` with its output in work, so that it neither
// races other tests that run bin/sendmail nor leaves files in the tree.
func buildDeb(t *testing.T, root, work string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "-s", "deb", "BIN="+filepath.Join(work, "bin"), "DIST="+filepath.Join(work, "dist"))
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(work, "dist", "postie_*_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %d files named postie_<version>_<arch>.deb in %s/dist, want 1: %v", len(debs), work, debs)
	}
	return debs[0]
}

// checkControl checks the fields that make Postie replace another MTA.
func checkControl(t *testing.T, deb string) {
	t.Helper()
	out := run(t, "dpkg-deb", "-f", deb)
	fields := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(line, " ") {
			fields[k] = v
		}
	}
	if fields["Package"] != "postie" {
		t.Errorf("Package: %q, want postie", fields["Package"])
	}
	for _, k := range []string{"Provides", "Conflicts", "Replaces"} {
		if !slices.Contains(splitList(fields[k]), "mail-transport-agent") {
			t.Errorf("%s: %q, want mail-transport-agent (as dma and msmtp-mta)", k, fields[k])
		}
	}
	if !slices.Contains(splitList(fields["Depends"]), "passwd") {
		t.Errorf("Depends: %q, want passwd (the maintainer scripts run useradd)", fields["Depends"])
	}
	conffiles := run(t, "dpkg-deb", "-I", deb, "conffiles")
	if strings.TrimSpace(conffiles) != "/etc/postie/postie.toml" {
		t.Errorf("conffiles: %q, want /etc/postie/postie.toml", conffiles)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		out = append(out, strings.TrimSpace(f))
	}
	return out
}

// checkArchive checks the files of the package, as dpkg-deb lists them.
func checkArchive(t *testing.T, deb string) {
	t.Helper()
	type entry struct{ perm, owner, target string }
	got := map[string]entry{}
	for _, line := range strings.Split(run(t, "dpkg-deb", "-c", deb), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		e := entry{perm: f[0], owner: f[1]}
		if len(f) >= 8 && f[6] == "->" {
			e.target = f[7]
		}
		got[strings.TrimPrefix(f[5], ".")] = e
	}
	want := map[string]entry{
		// Not setgid in the archive: the group does not exist when dpkg
		// unpacks it, and dpkg would make it setgid root. postinst sets
		// it (dpkg-statoverride).
		"/usr/sbin/sendmail":                       {"-rwxr-xr-x", "root/root", ""},
		"/usr/bin/mailq":                           {"-rwxr-xr-x", "root/root", ""},
		"/usr/lib/sendmail":                        {"lrwxrwxrwx", "root/root", "../sbin/sendmail"},
		"/usr/bin/newaliases":                      {"lrwxrwxrwx", "root/root", "../sbin/sendmail"},
		"/etc/postie/postie.toml":                  {"-rw-r--r--", "root/root", ""},
		"/lib/systemd/system/postie-flush.path":    {"-rw-r--r--", "root/root", ""},
		"/lib/systemd/system/postie-flush.service": {"-rw-r--r--", "root/root", ""},
		"/lib/systemd/system/postie-flush.timer":   {"-rw-r--r--", "root/root", ""},
		"/usr/share/man/man8/sendmail.8.gz":        {"-rw-r--r--", "root/root", ""},
		"/usr/share/man/man8/mailq.8.gz":           {"-rw-r--r--", "root/root", ""},
		"/usr/share/man/man5/postie.toml.5.gz":     {"-rw-r--r--", "root/root", ""},
	}
	for path, w := range want {
		g, ok := got[path]
		if !ok {
			t.Errorf("package lacks %s", path)
			continue
		}
		// dpkg-deb prints symbolic links as l---------; only the target
		// matters for them.
		if w.target != "" {
			if g.target != w.target {
				t.Errorf("%s -> %q, want -> %q", path, g.target, w.target)
			}
			continue
		}
		if g.perm != w.perm || g.owner != w.owner {
			t.Errorf("%s: %s %s, want %s %s", path, g.perm, g.owner, w.perm, w.owner)
		}
	}
}

// checkScripts checks that the maintainer scripts are valid POSIX sh.
func checkScripts(t *testing.T, root string) {
	t.Helper()
	scripts, _ := filepath.Glob(filepath.Join(root, "packaging", "scripts", "*"))
	if len(scripts) == 0 {
		t.Fatal("no maintainer scripts in packaging/scripts")
	}
	shells := []string{"sh"}
	if _, err := exec.LookPath("dash"); err == nil {
		shells = append(shells, "dash")
	}
	for _, s := range scripts {
		for _, sh := range shells {
			if out, err := exec.Command(sh, "-n", s).CombinedOutput(); err != nil {
				t.Errorf("%s -n %s: %v\n%s", sh, s, err, out)
			}
		}
	}
}

// host records what the test changed on the machine, to undo it.
type host struct {
	users    []string        // created by the test
	replaced []string        // packages apt removed to install postie
	auto     map[string]bool // apt's "automatically installed" marks before
	done     bool            // postie purged and the machine restored
}

func (h *host) createUsers(t *testing.T) {
	t.Helper()
	for _, u := range testUsers {
		if _, err := user.Lookup(u); err == nil {
			// Left by an interrupted run: reuse it, remove it at the end.
			h.users = append(h.users, u)
			continue
		}
		run(t, "useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--comment", "Postie package test", u)
		h.users = append(h.users, u)
	}
}

// install installs the .deb with apt-get, as a user would. An installed MTA
// must be one that apt removes for it.
func (h *host) install(t *testing.T, deb string) {
	t.Helper()
	sim := run(t, "apt-get", "-o", aptLock, "-s", "install", deb)
	var removes []string
	for _, line := range strings.Split(sim, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Remv" {
			removes = append(removes, f[1])
		}
	}
	for _, mta := range installedMTAs(t) {
		if !slices.Contains(removes, mta) {
			t.Errorf("installed MTA %s is not replaced by installing postie (apt would remove: %v)", mta, removes)
		}
	}
	h.auto = map[string]bool{}
	for _, p := range strings.Fields(run(t, "apt-mark", "showauto")) {
		h.auto[p] = true
	}
	runEnv(t, []string{"DEBIAN_FRONTEND=noninteractive"}, "apt-get", "-o", aptLock, "install", "-y", deb)
	for _, p := range removes {
		if dpkgStatus(p) != "ii" {
			h.replaced = append(h.replaced, p)
		}
	}
	if len(h.replaced) > 0 {
		t.Logf("installing postie replaced %v; they are installed again at the end", h.replaced)
	}
}

// installedMTAs returns the installed packages that provide
// mail-transport-agent.
func installedMTAs(t *testing.T) []string {
	t.Helper()
	out := run(t, "dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Provides}\n")
	var mtas []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.SplitN(line, "\t", 3)
		if len(f) == 3 && strings.TrimSpace(f[0]) == "ii" && strings.Contains(f[2], "mail-transport-agent") {
			mtas = append(mtas, f[1])
		}
	}
	return mtas
}

// removeAndPurge takes postie off the machine the way an administrator
// would, and puts back the MTA it replaced: installing that MTA removes
// postie (they conflict), then postie's configuration is purged.
func (h *host) removeAndPurge(t *testing.T) {
	t.Helper()
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	if len(h.replaced) > 0 {
		args := append([]string{"-o", aptLock, "install", "-y", "--no-install-recommends"}, h.replaced...)
		if out, err := command(env, "apt-get", args...); err != nil {
			t.Errorf("reinstalling the MTA postie replaced: apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		for _, p := range h.replaced {
			if h.auto[p] {
				command(nil, "apt-mark", "auto", p)
			}
		}
	}
	if dpkgStatus("postie") != "" {
		// apt-get purge would also remove packages that now depend on
		// postie as their mail-transport-agent (bsd-mailx installed by
		// another test meanwhile): give them Debian's default MTA first.
		sim, _ := command(nil, "apt-get", "-o", aptLock, "-s", "purge", "postie")
		for _, line := range strings.Split(sim, "\n") {
			if f := strings.Fields(line); len(f) >= 2 && (f[0] == "Purg" || f[0] == "Remv") && f[1] != "postie" {
				t.Logf("purging postie would remove %s: installing default-mta first", f[1])
				if out, err := command(env, "apt-get", "-o", aptLock, "install", "-y", "--no-install-recommends", "default-mta"); err != nil {
					t.Errorf("apt-get install default-mta: %v\n%s", err, out)
				}
				break
			}
		}
		if out, err := command(env, "apt-get", "-o", aptLock, "purge", "-y", "postie"); err != nil {
			t.Errorf("apt-get purge postie: %v\n%s", err, out)
		}
	}
	h.done = true
}

// restore undoes what the test did if it stopped before purging, and
// removes the users it created.
func (h *host) restore(t *testing.T) {
	if !h.done && (dpkgStatus("postie") != "" || len(h.replaced) > 0) {
		h.removeAndPurge(t)
	}
	for _, u := range h.users {
		if out, err := command(nil, "userdel", u); err != nil {
			t.Errorf("userdel %s: %v\n%s", u, err, out)
		}
	}
}

// checkInstalled checks accounts, modes and units after installation.
func checkInstalled(t *testing.T) {
	t.Helper()
	want := []struct {
		path, owner, group string
		mode               uint32
	}{
		{sendmailPath, "root", "postdrop", 0o2755},
		{mailqPath, "root", "root", 0o755},
		{etcDir, "root", "root", 0o755},
		{etcDir + "/postie.toml", "root", "root", 0o644},
		{spoolDir, "postie", "postdrop", 0o750},
		{spoolDir + "/tmp", "postie", "postdrop", 0o1730},
		{spoolDir + "/incoming", "postie", "postdrop", 0o1730},
		{spoolDir + "/limits", "postie", "postdrop", 0o1730},
		{spoolDir + "/queue", "postie", "postie", 0o700},
		{spoolDir + "/failed", "postie", "postie", 0o700},
	}
	for _, w := range want {
		owner, group, mode, err := statPath(w.path)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if owner != w.owner || group != w.group || mode != w.mode {
			t.Errorf("%s: %s:%s %04o, want %s:%s %04o", w.path, owner, group, mode, w.owner, w.group, w.mode)
		}
	}
	for _, link := range []string{"/usr/lib/sendmail", "/usr/bin/newaliases"} {
		if target, err := os.Readlink(link); err != nil || target != "../sbin/sendmail" {
			t.Errorf("%s -> %q (%v), want -> ../sbin/sendmail", link, target, err)
		}
	}
	if got := strings.TrimSpace(run(t, "dpkg-statoverride", "--list", sendmailPath)); got != "root postdrop 2755 "+sendmailPath {
		t.Errorf("dpkg-statoverride --list %s: %q, want \"root postdrop 2755 %s\"", sendmailPath, got, sendmailPath)
	}

	u, err := user.Lookup("postie")
	if err != nil {
		t.Fatalf("user postie: %v", err)
	}
	if u.HomeDir != spoolDir {
		t.Errorf("postie's home: %s, want %s", u.HomeDir, spoolDir)
	}
	if g, err := user.LookupGroupId(u.Gid); err != nil || g.Name != "postie" {
		t.Errorf("postie's primary group: %v (%v), want postie", g, err)
	}
	if shell := passwdField(t, "postie", 6); !strings.HasSuffix(shell, "/nologin") && shell != "/bin/false" {
		t.Errorf("postie's shell: %q, want nologin", shell)
	}
	if uid, _ := strconv.Atoi(u.Uid); uid >= 1000 {
		t.Errorf("postie's uid %d is not a system uid", uid)
	}
	groups := strings.Fields(run(t, "id", "-Gn", "postie"))
	if !slices.Contains(groups, "postdrop") {
		t.Errorf("postie's groups: %v, want postdrop among them", groups)
	}

	for _, unit := range []string{"postie-flush.path", "postie-flush.service", "postie-flush.timer"} {
		if _, err := os.Stat("/lib/systemd/system/" + unit); err != nil {
			t.Errorf("unit file: %v", err)
		}
	}
	if _, err := exec.LookPath("deb-systemd-helper"); err == nil {
		// Enabled even without a running systemd, for when it runs.
		for _, link := range []string{
			"/etc/systemd/system/paths.target.wants/postie-flush.path",
			"/etc/systemd/system/timers.target.wants/postie-flush.timer",
		} {
			if _, err := os.Lstat(link); err != nil {
				t.Errorf("unit not enabled: %v", err)
			}
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		out, err := command(nil, "systemd-analyze", "verify", "--man=no",
			"/lib/systemd/system/postie-flush.path", "/lib/systemd/system/postie-flush.service", "/lib/systemd/system/postie-flush.timer")
		if err != nil {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}
	if systemdRunning() {
		for _, unit := range []string{"postie-flush.path", "postie-flush.timer"} {
			if out, err := command(nil, "systemctl", "is-active", unit); err != nil {
				t.Errorf("%s is not active after installation: %s", unit, out)
			}
		}
	}
}

// checkPostinstIdempotent runs postinst again, as dpkg-reconfigure or a
// reinstallation would, and checks that it succeeds and changes nothing.
func checkPostinstIdempotent(t *testing.T) {
	t.Helper()
	before := run(t, "ls", "-ld", sendmailPath, spoolDir, spoolDir+"/tmp", spoolDir+"/incoming", spoolDir+"/limits", spoolDir+"/queue", spoolDir+"/failed")
	groupsBefore := run(t, "getent", "group", "postdrop", "postie")
	version := strings.TrimSpace(run(t, "dpkg-query", "-W", "-f", "${Version}", "postie"))
	out, err := command([]string{"DPKG_MAINTSCRIPT_PACKAGE=postie", "DPKG_MAINTSCRIPT_NAME=postinst"},
		"/var/lib/dpkg/info/postie.postinst", "configure", version)
	if err != nil {
		t.Errorf("postinst configure run again: %v\n%s", err, out)
	}
	if after := run(t, "ls", "-ld", sendmailPath, spoolDir, spoolDir+"/tmp", spoolDir+"/incoming", spoolDir+"/limits", spoolDir+"/queue", spoolDir+"/failed"); after != before {
		t.Errorf("postinst run again changed modes:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if after := run(t, "getent", "group", "postdrop", "postie"); after != groupsBefore {
		t.Errorf("postinst run again changed groups:\nbefore:\n%s\nafter:\n%s", groupsBefore, after)
	}
}

// sink is a loopback smarthost (tools/postie-sink).
type sink struct {
	addr, caFile, dir string
}

func startSink(t *testing.T, root, work string) *sink {
	t.Helper()
	bin := filepath.Join(work, "postie-sink")
	cmd := exec.Command("go", "build", "-o", bin, "./tools/postie-sink")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./tools/postie-sink: %v\n%s", err, out)
	}
	s := &sink{dir: filepath.Join(work, "mail")}
	tcheck(t, os.Mkdir(s.dir, 0o700), "sink directory")
	info := filepath.Join(work, "sink.env")
	proc := exec.Command(bin, "-dir", s.dir, "-user", "postie-test", "-pass", "postie-test-secret", "-info", info)
	tcheck(t, proc.Start(), "start postie-sink")
	t.Cleanup(func() {
		proc.Process.Signal(os.Interrupt)
		proc.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		b, err := os.ReadFile(info)
		if err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				k, v, _ := strings.Cut(line, "=")
				switch k {
				case "ADDR":
					s.addr = v
				case "CA_FILE":
					s.caFile = v
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("postie-sink did not write %s: %v", info, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// configure writes the system configuration for the sink, with the
// secrets as packaging/README.md says: 0640 root:postie.
func configure(t *testing.T, s *sink) {
	t.Helper()
	g, err := user.LookupGroup("postie")
	tcheck(t, err, "group postie")
	gid, _ := strconv.Atoi(g.Gid)
	secret := func(name string, data []byte) string {
		p := filepath.Join(etcDir, name)
		tcheck(t, os.WriteFile(p, data, 0o640), "write "+p)
		tcheck(t, os.Chown(p, 0, gid), "chown "+p)
		tcheck(t, os.Chmod(p, 0o640), "chmod "+p)
		return p
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	tcheck(t, err, "DKIM key")
	der, err := x509.MarshalPKCS8PrivateKey(key)
	tcheck(t, err, "DKIM key")
	password := secret("password", []byte("postie-test-secret\n"))
	dkimKey := secret("dkim.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	ca, err := os.ReadFile(s.caFile)
	tcheck(t, err, "sink CA")
	caFile := filepath.Join(etcDir, "smarthost-ca.pem")
	tcheck(t, os.WriteFile(caFile, ca, 0o644), "write "+caFile)
	conf := fmt.Sprintf(`hostname = "postie-test.example.com"

[smarthost]
address = %q
username = "postie-test"
password_file = %q
ca_file = %q

[dkim]
domain = "example.com"
selector = "test"
private_key_file = %q
`, s.addr, password, caFile, dkimKey)
	tcheck(t, os.WriteFile(filepath.Join(etcDir, "postie.toml"), []byte(conf), 0o644), "write postie.toml")
}

// writeEvilConfig writes a configuration an ordinary user would like the
// setgid sendmail to use: a spool of their choosing. It must be ignored.
func writeEvilConfig(t *testing.T, work string) string {
	t.Helper()
	dir := filepath.Join(work, "evil")
	tcheck(t, os.Mkdir(dir, 0o755), "evil config directory")
	tcheck(t, os.Chmod(work, 0o755), "chmod "+work)
	p := filepath.Join(dir, "evil.toml")
	conf := fmt.Sprintf("spool_dir = %q\n[smarthost]\naddress = \"127.0.0.1:1\"\n", filepath.Join(dir, "spool"))
	tcheck(t, os.WriteFile(p, []byte(conf), 0o644), "write "+p)
	return p
}

// submission is a message a user queued.
type submission struct {
	user, subject, id string
}

// submitAsUsers queues one message as each user the way programs do, and
// returns them with their queue IDs.
func submitAsUsers(t *testing.T, evil string) []submission {
	t.Helper()
	var sent []submission
	submit := func(user, subject string, env []string, argv ...string) {
		msg := fmt.Sprintf("From: %s <%s@example.com>\nTo: rcpt-%s@example.net\nSubject: %s\n\nSent by %s.\n", user, user, user, subject, user)
		out, code := runAs(user, msg, env, argv...)
		if code != 0 {
			t.Errorf("%s as %s: exit %d, want 0:\n%s", strings.Join(argv, " "), user, code, out)
			return
		}
		sent = append(sent, submission{user: user, subject: subject})
	}
	for _, u := range systemUsers() {
		submit(u, "package test: "+u, nil, sendmailPath, "-t", "-i")
	}
	// $POSTIE_CONFIG is ignored by the setgid sendmail: the message goes
	// to the system spool, not to the one evil.toml names.
	if u := firstSystemUser(); u != "" {
		submit(u, "package test: "+u+" with POSTIE_CONFIG", []string{"POSTIE_CONFIG=" + evil}, sendmailPath, "-t", "-i")
	}
	// A caller with umask 077 (cron jobs, hardened services) must still
	// hand the runner a file it can read.
	submit("postie-test-a", "package test: postie-test-a umask 077", nil, "/bin/sh", "-c", "umask 077 && exec "+sendmailPath+" -t -i")
	// Recipients as arguments, an explicit sender, -- before them, as
	// cron and PHP's mail() do.
	submit("postie-test-b", "package test: postie-test-b", nil, sendmailPath, "-i", "-f", "postie-test-b@example.com", "--", "rcpt-postie-test-b@example.net")
	submit("root", "package test: root", nil, sendmailPath, "-t", "-i")
	if _, err := os.Stat(filepath.Join(filepath.Dir(evil), "spool")); err == nil {
		t.Errorf("sendmail created the spool named by $POSTIE_CONFIG")
	}
	return sent
}

// systemUsers returns the usual daemon accounts that exist here, which
// the test runs sendmail as: a PHP site (www-data) and nobody.
func systemUsers() []string {
	var users []string
	for _, u := range []string{"www-data", "nobody"} {
		if _, err := user.Lookup(u); err == nil {
			users = append(users, u)
		}
	}
	return users
}

func firstSystemUser() string {
	if u := systemUsers(); len(u) > 0 {
		return u[0]
	}
	return ""
}

// queueEntry is the part of mailq --json the test reads.
type queueEntry struct {
	ID   string `json:"id"`
	User string `json:"user"`
}

// checkQueueAsRoot lists the queue as root (mailq drops to postie) and
// fills in the queue IDs of sent.
func checkQueueAsRoot(t *testing.T, sent []submission) {
	t.Helper()
	out, code := runAs("root", "", nil, mailqPath, "--json")
	if code != 0 {
		t.Fatalf("mailq --json as root: exit %d:\n%s", code, out)
	}
	var q []queueEntry
	if err := json.Unmarshal([]byte(out), &q); err != nil {
		t.Fatalf("mailq --json: %v\n%s", err, out)
	}
	perUser := map[string][]string{}
	for _, e := range q {
		perUser[e.User] = append(perUser[e.User], e.ID)
	}
	want := map[string]int{}
	for _, s := range sent {
		want[s.user]++
	}
	for u, n := range want {
		if len(perUser[u]) != n {
			t.Errorf("mailq --json as root lists %d message(s) from %s, want %d (queue: %v)", len(perUser[u]), u, n, perUser)
		}
	}
	for i := range sent {
		if ids := perUser[sent[i].user]; len(ids) > 0 {
			sent[i].id = ids[0]
		}
	}
}

// checkUsersLockedOut checks, as each ordinary user, that the secrets
// and the queue are out of reach and that the setgid sendmail cannot be
// pointed elsewhere.
func checkUsersLockedOut(t *testing.T, sent []submission, evil string) {
	t.Helper()
	// Someone else's message, whose queue ID a user may have learnt.
	var victim submission
	for _, s := range sent {
		if s.user == "root" {
			victim = s
		}
	}
	users := append(systemUsers(), testUsers...)
	for _, u := range users {
		mustFail := func(what string, argv ...string) {
			if out, code := runAs(u, "", nil, argv...); code == 0 {
				t.Errorf("as %s, %s succeeded:\n%s", u, what, out)
			}
		}
		mustFail("reading the smarthost password", "cat", etcDir+"/password")
		mustFail("reading the DKIM key", "cat", etcDir+"/dkim.key")
		mustFail("listing the queue directory", "ls", spoolDir+"/queue")
		mustFail("listing incoming/", "ls", spoolDir+"/incoming")
		mustFail("listing tmp/", "ls", spoolDir+"/tmp")
		if victim.id != "" {
			mustFail("reading root's queued message by its ID", "cat", spoolDir+"/incoming/"+victim.id)
			mustFail("reading root's queued message by its ID", "cat", spoolDir+"/queue/"+victim.id)
		}
		for _, flag := range []string{"-bp", "-q"} {
			if out, code := runAs(u, "", nil, sendmailPath, flag); code != 77 {
				t.Errorf("sendmail %s as %s: exit %d, want 77 (permission denied):\n%s", flag, u, code, out)
			}
		}

		if out, code := runAs(u, "", nil, mailqPath); code != 77 {
			t.Errorf("mailq as %s: exit %d, want 77 (permission denied):\n%s", u, code, out)
		} else if strings.Contains(out, "rcpt-") {
			t.Errorf("mailq as %s shows recipients:\n%s", u, out)
		}
		msg := "To: rcpt-evil@example.net\nSubject: evil\n\nx\n"
		if out, code := runAs(u, msg, nil, sendmailPath, "-C", evil, "-t", "-i"); code != 64 {
			t.Errorf("sendmail -C %s as %s: exit %d, want 64 (refused):\n%s", evil, u, code, out)
		}
		if out, code := runAs(u, "", nil, "/usr/bin/newaliases"); code != 0 {
			t.Errorf("newaliases as %s: exit %d, want 0:\n%s", u, code, out)
		}
		// An ordinary user can neither deliver nor take messages out
		// of incoming/.
		runAs(u, "", nil, mailqPath, "-q")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(evil), "spool")); err == nil {
		t.Errorf("sendmail or mailq created the spool named by -C %s", evil)
	}
	// Nothing was delivered or moved by those flushes.
	out, _ := runAs("root", "", nil, mailqPath, "--json")
	var q []queueEntry
	if err := json.Unmarshal([]byte(out), &q); err == nil {
		n := 0
		for _, s := range sent {
			if s.id != "" {
				n++
			}
		}
		if len(q) < n {
			t.Errorf("after flushes by ordinary users the queue holds %d messages, want %d", len(q), n)
		}
	}
}

// checkDelivered checks that every message arrived, with the trace of
// its submitter and a DKIM signature made with the key only postie reads,
// and that the queue is empty.
func checkDelivered(t *testing.T, s *sink, sent []submission) {
	t.Helper()
	msgs := readSink(t, s)
	for _, sub := range sent {
		m := findMessage(msgs, "Subject: "+sub.subject)
		if m == "" {
			t.Errorf("message from %s (%q) did not arrive at the smarthost", sub.user, sub.subject)
			continue
		}
		u, err := user.Lookup(sub.user)
		tcheck(t, err, "user "+sub.user)
		trace := fmt.Sprintf("(Postie, from userid %s %s)", u.Uid, sub.user)
		if !strings.Contains(m, trace) {
			t.Errorf("message from %s lacks the trace %q:\n%s", sub.user, trace, headerOf(m))
		}
		if !strings.Contains(m, "DKIM-Signature:") || !strings.Contains(m, "d=example.com") {
			t.Errorf("message from %s is not DKIM-signed for example.com:\n%s", sub.user, headerOf(m))
		}
	}
	if out, code := runAs("root", "", nil, mailqPath); code != 0 || strings.TrimSpace(out) != "Mail queue is empty" {
		t.Errorf("mailq after delivery: exit %d:\n%s", code, out)
	}
	for _, d := range []string{"incoming", "queue"} {
		entries, err := os.ReadDir(filepath.Join(spoolDir, d))
		tcheck(t, err, "read "+d)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue
			}
			hint := ""
			if info.Mode().Perm()&0o040 == 0 {
				hint = " (not readable by the group postdrop: sendmail must create queue files 0640 whatever the caller's umask)"
			}
			t.Errorf("left in %s/ after delivery: %s, mode %v%s", d, e.Name(), info.Mode(), hint)
		}
	}
}

// checkPathUnit checks that, with systemd, a message is delivered with no
// flush by hand: postie-flush.path starts the runner.
func checkPathUnit(t *testing.T, s *sink) {
	t.Helper()
	run(t, "systemctl", "start", "postie-flush.path", "postie-flush.timer")
	u := firstSystemUser()
	if u == "" {
		u = testUsers[0]
	}
	subject := "package test: path unit"
	msg := fmt.Sprintf("From: %s@example.com\nTo: rcpt-path@example.net\nSubject: %s\n\nx\n", u, subject)
	if out, code := runAs(u, msg, nil, sendmailPath, "-t", "-i"); code != 0 {
		t.Fatalf("sendmail as %s: exit %d:\n%s", u, code, out)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if findMessage(readSink(t, s), "Subject: "+subject) != "" {
			return
		}
	}
	out, _ := command(nil, "systemctl", "status", "--no-pager", "postie-flush.path", "postie-flush.service")
	t.Errorf("postie-flush.path did not deliver a new message within 30s:\n%s", out)
}

// checkPurged checks that the purge left no account, file or unit state
// behind, and that the MTA postie replaced is back.
func checkPurged(t *testing.T, h *host) {
	t.Helper()
	if st := dpkgStatus("postie"); st != "" {
		t.Errorf("postie is still known to dpkg after purge: %q", st)
	}
	if _, err := user.Lookup("postie"); err == nil {
		t.Error("user postie left after purge")
	}
	for _, g := range []string{"postie", "postdrop"} {
		if _, err := user.LookupGroup(g); err == nil {
			t.Errorf("group %s left after purge", g)
		}
	}
	left := []string{spoolDir, etcDir}
	for _, pattern := range []string{
		"/lib/systemd/system/postie-flush.*",
		"/usr/lib/systemd/system/postie-flush.*",
		"/etc/systemd/system/postie-flush.*",
		"/etc/systemd/system/*/postie-flush.*",
		"/var/lib/systemd/deb-systemd-helper-enabled/postie-flush.*",
		"/var/lib/systemd/deb-systemd-helper-enabled/*/postie-flush.*",
		"/var/lib/systemd/deb-systemd-helper-masked/postie-flush.*",
	} {
		m, _ := filepath.Glob(pattern)
		left = append(left, m...)
	}
	for _, p := range left {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left after purge", p)
		}
	}
	if out, err := command(nil, "dpkg-statoverride", "--list", sendmailPath); err == nil {
		t.Errorf("statoverride left after purge: %s", out)
	}
	if _, err := os.Lstat(sendmailPath); err == nil {
		// The MTA put back owns it now, without postie's setgid bit.
		owner, _ := command(nil, "dpkg", "-S", sendmailPath)
		if strings.HasPrefix(owner, "postie:") {
			t.Errorf("%s still belongs to postie", sendmailPath)
		}
		if _, group, mode, err := statPath(sendmailPath); err == nil && (group == "postdrop" || mode&0o2000 != 0) {
			t.Errorf("%s is setgid (group %s, mode %04o) after purge", sendmailPath, group, mode)
		}
	} else if len(h.replaced) > 0 {
		t.Errorf("%s is missing although %v was installed again", sendmailPath, h.replaced)
	}
	for _, p := range h.replaced {
		if st := dpkgStatus(p); st != "ii" {
			t.Errorf("%s replaced by postie is not installed again (status %q)", p, st)
		}
	}
}

// readSink returns the messages the sink stored.
func readSink(t *testing.T, s *sink) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(s.dir, "*.eml"))
	var msgs []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil {
			msgs = append(msgs, strings.ReplaceAll(string(b), "\r\n", "\n"))
		}
	}
	return msgs
}

func findMessage(msgs []string, line string) string {
	for _, m := range msgs {
		sc := bufio.NewScanner(strings.NewReader(headerOf(m)))
		for sc.Scan() {
			if sc.Text() == line {
				return m
			}
		}
	}
	return ""
}

func headerOf(m string) string {
	h, _, _ := strings.Cut(m, "\n\n")
	return h
}

// runAs runs argv as user with stdin, from /, and returns its combined
// output and exit code (-1 when it could not run).
func runAs(username, stdin string, env []string, argv ...string) (string, int) {
	args := append([]string{"-u", username, "--"}, argv...)
	cmd := exec.Command("runuser", args...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	return fmt.Sprintf("%s: %v", argv[0], err), -1
}

// command runs name with args (and env added) and returns its combined
// output.
func command(env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// run is command that fails the test on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return runEnv(t, nil, name, args...)
}

func runEnv(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := command(env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func tcheck(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// dpkgStatus returns dpkg's abbreviated status of pkg ("ii", "rc", ...),
// or "" when dpkg does not know it.
func dpkgStatus(pkg string) string {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", pkg).Output()
	if err != nil {
		return ""
	}
	st := strings.TrimSpace(string(out))
	if st == "un" {
		return ""
	}
	return st
}

// statPath returns the owner, group and permission bits (with setuid,
// setgid and sticky) of path.
func statPath(path string) (owner, group string, mode uint32, err error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		return "", "", 0, fmt.Errorf("stat %s: %w", path, err)
	}
	owner, group = strconv.Itoa(int(st.Uid)), strconv.Itoa(int(st.Gid))
	if u, err := user.LookupId(owner); err == nil {
		owner = u.Username
	}
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	return owner, group, st.Mode & 0o7777, nil
}

// passwdField returns field i (0-based) of name's passwd entry.
func passwdField(t *testing.T, name string, i int) string {
	t.Helper()
	f := strings.Split(strings.TrimSpace(run(t, "getent", "passwd", name)), ":")
	if i >= len(f) {
		return ""
	}
	return f[i]
}

func systemdRunning() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}
