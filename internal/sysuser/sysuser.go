// Package sysuser tells who is running a Postie program, from the kernel:
// the real uid (never $USER or $LOGNAME, which the caller controls) and
// what /proc says of the parent process.
package sysuser

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// Caller describes the invoking user and process.
type Caller struct {
	UID      int
	User     string
	FullName string
	Home     string
	// Cwd and Exe are the parent process's working directory and
	// executable, when /proc lets us read them.
	Cwd, Exe string
}

// Current returns the caller of this process.
func Current() Caller {
	c := Caller{UID: os.Getuid()}
	if u, err := user.LookupId(strconv.Itoa(c.UID)); err == nil {
		c.User = u.Username
		// GECOS: "Full Name,room,phone,...".
		c.FullName, _, _ = strings.Cut(u.Name, ",")
		c.Home = u.HomeDir
	} else {
		c.User = "uid" + strconv.Itoa(c.UID)
	}
	ppid := os.Getppid()
	if ppid > 1 {
		base := "/proc/" + strconv.Itoa(ppid)
		if p, err := os.Readlink(base + "/cwd"); err == nil {
			c.Cwd = p
		}
		if p, err := os.Readlink(base + "/exe"); err == nil {
			c.Exe = p
		}
	}
	return c
}

// Privileged reports whether the process runs with raised privileges
// (setuid or setgid): then it must not trust the environment or let the
// caller choose its configuration.
func Privileged() bool {
	return os.Geteuid() != os.Getuid() || os.Getegid() != os.Getgid()
}

// Name returns the user name of uid, or "uidN" when it has none.
func Name(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return "uid" + strconv.Itoa(uid)
}

// DropToOwner switches a process running as root to the user that owns
// dir (the queue runner's user on a packaged install), with that user's
// groups, so that files root would create in the queue stay readable by
// the runner. It does nothing unless running as root and dir belongs to
// another user.
func DropToOwner(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil // nothing to protect yet
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || sys.Uid == 0 {
		return nil
	}
	u, err := user.LookupId(strconv.Itoa(int(sys.Uid)))
	if err != nil {
		return fmt.Errorf("spool %s belongs to uid %d, which has no user entry: %w", dir, sys.Uid, err)
	}
	gid, _ := strconv.Atoi(u.Gid)
	var groups []int
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.Atoi(g); err == nil {
				groups = append(groups, n)
			}
		}
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("drop privileges to %s: setgroups: %w", u.Username, err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("drop privileges to %s: setgid: %w", u.Username, err)
	}
	if err := syscall.Setuid(int(sys.Uid)); err != nil {
		return fmt.Errorf("drop privileges to %s: setuid: %w", u.Username, err)
	}
	return nil
}
