// Package torture holds Postie's torture tests: the built sendmail and
// mailq killed with SIGKILL at random instants, a smarthost that fails in
// every way SMTP allows, a spool on a full file system, and runner
// processes killed at exact system calls. Each test has a short version
// for the default suite and a long one run with POSTIE_LONG=1; see
// RELIABILITY.md at the top of the repository for what each proves and
// what was measured.
package torture
