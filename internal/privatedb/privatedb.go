// Package privatedb holds a test helper that runs a private database server: a MariaDB or
// PostgreSQL of the test's own, in a temporary directory on a port of its own, that the test
// can kill -9 at the moment it chooses and start again on the same data (as a crash and a
// restart). The shared servers, which other tests use at the same time, are never touched.
// Starting one takes about a second. The crash tests of the coordinator, the outbox relay, the
// offset stores and the transactional consumer share it.
//
// The binaries are found where Debian installs them (mariadbd, mariadb-install-db,
// /usr/lib/postgresql/*/bin); without them a test skips, unless the services are required
// (testenv.Required), when it fails.
package privatedb

import (
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // ping, create the database
	_ "github.com/jackc/pgx/v5/stdlib" // ping, Open

	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/internal/tmpfs"
)

// Server is one private database server.
type Server struct {
	t       testing.TB
	driver  string // "mysql" or "postgres"
	dir     string
	port    int
	args    []string
	cred    *syscall.Credential // PostgreSQL refuses to run as root: run as postgres
	logPath string
	disk    string // the tmpfs that holds the data directory (OnTmpfs), or ""

	mu     sync.Mutex // Kill may run on another goroutine than Start
	cmd    *exec.Cmd
	exited chan struct{}
}

const (
	mariadbd         = "/usr/sbin/mariadbd"
	mariadbInstallDB = "/usr/bin/mariadb-install-db"
	pgBinGlob        = "/usr/lib/postgresql/*/bin"
)

// Option adjusts a private server before its data directory is made.
type Option func(*config)

type config struct {
	tmpfs    string      // the size of the tmpfs that holds the data directory, or ""
	settings [][2]string // server settings (Setting)
}

// Setting sets a server setting at start-up: PostgreSQL's -c name=value, MariaDB's
// --name=value.
func Setting(name, value string) Option {
	return func(c *config) { c.settings = append(c.settings, [2]string{name, value}) }
}

// OnTmpfs puts the server's whole data directory (tables, redo log or WAL, everything) on a
// tmpfs of its own of the given size ("64m"), mounted by the test (root only; elsewhere the
// test skips), so that the test can run the server out of space (Fill). PostgreSQL's WAL
// segments are then 1 MiB and not recycled (wal_recycle off), so that a server whose disk is
// full needs a new segment soon after its current one fills: its next WAL write fails there.
// PostgreSQL needs about 40 MB of it to start; MariaDB about 90 MB (its system tablespace
// alone takes 68 MB), with a 4 MB redo log.
func OnTmpfs(size string) Option { return func(c *config) { c.tmpfs = size } }

func configure(opts []Option) config {
	var c config
	for _, o := range opts {
		o(&c)
	}
	return c
}

// dataDir is where the server's data directory goes: in dir, or on a tmpfs mounted in dir
// that the server's user owns.
func (s *Server) dataDir(t testing.TB, c config) string {
	t.Helper()
	if c.tmpfs == "" {
		return filepath.Join(s.dir, "data")
	}
	s.disk = filepath.Join(s.dir, "disk")
	if err := os.Mkdir(s.disk, 0o700); err != nil {
		t.Fatal(err)
	}
	opts := "size=" + c.tmpfs + ",mode=0700"
	if s.cred != nil {
		opts += fmt.Sprintf(",uid=%d,gid=%d", s.cred.Uid, s.cred.Gid)
	}
	tmpfs.MountOn(t, s.disk, opts)
	return filepath.Join(s.disk, "data")
}

// Fill fills the file system of the server's data directory (OnTmpfs) until about leave
// bytes are free and returns a function that frees the space again.
func (s *Server) Fill(leave int64) (free func()) {
	s.t.Helper()
	if s.disk == "" {
		s.t.Fatal("privatedb: Fill needs a server started OnTmpfs")
	}
	return tmpfs.Fill(s.t, s.disk, leave)
}

// MariaDB starts a private MariaDB with a database "test" (DSN names it), killed when the
// test ends.
func MariaDB(t testing.TB, opts ...Option) *Server {
	t.Helper()
	for _, bin := range []string{mariadbd, mariadbInstallDB} {
		if _, err := os.Stat(bin); err != nil {
			skipOrFail(t, "private MariaDB: "+err.Error())
		}
	}
	dir := tempDir(t, nil)
	s := &Server{t: t, driver: "mysql", dir: dir, port: freePort(t), logPath: filepath.Join(dir, "server.log")}
	c := configure(opts)
	data := s.dataDir(t, c)
	install := []string{"--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal", "--skip-test-db"}
	if os.Geteuid() == 0 {
		install = append(install, "--user=root")
	}
	var small []string
	if c.tmpfs != "" {
		// A small redo log (allocated whole at start) and temporary tablespace.
		small = []string{"--innodb-log-file-size=4M", "--innodb-data-file-path=ibdata1:4M:autoextend",
			"--innodb-temp-data-file-path=ibtmp1:4M:autoextend"}
	}
	if out, err := exec.Command(mariadbInstallDB, append(install, small...)...).CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v: %s", err, out)
	}
	s.args = []string{mariadbd, "--no-defaults", "--datadir=" + data, "--socket=" + filepath.Join(dir, "sock"),
		"--port=" + strconv.Itoa(s.port), "--bind-address=127.0.0.1", "--skip-grant-tables", "--skip-name-resolve",
		"--pid-file=" + filepath.Join(dir, "pid"), "--innodb-buffer-pool-size=16M", "--log-error=" + s.logPath}
	if os.Geteuid() == 0 {
		s.args = append(s.args, "--user=root")
	}
	s.args = append(s.args, small...)
	for _, kv := range c.settings {
		s.args = append(s.args, "--"+kv[0]+"="+kv[1])
	}
	s.Start()
	root, err := sql.Open("mysql", s.rootDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.Exec("CREATE DATABASE IF NOT EXISTS test"); err != nil {
		t.Fatal(err)
	}
	return s
}

// Postgres starts a private PostgreSQL (max_prepared_transactions 64); DSN names its database
// "postgres". It is killed when the test ends.
func Postgres(t testing.TB, opts ...Option) *Server {
	t.Helper()
	bins, _ := filepath.Glob(pgBinGlob)
	if len(bins) == 0 {
		skipOrFail(t, "private PostgreSQL: no "+pgBinGlob)
	}
	bin := bins[len(bins)-1]
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			skipOrFail(t, "private PostgreSQL: running as root and no postgres user to run it as")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	dir := tempDir(t, cred)
	s := &Server{t: t, driver: "postgres", dir: dir, port: freePort(t), cred: cred, logPath: filepath.Join(dir, "server.log")}
	c := configure(opts)
	data := s.dataDir(t, c)
	initArgs := []string{"-D", data, "-A", "trust", "-U", "postgres", "--no-sync"}
	if c.tmpfs != "" {
		initArgs = append(initArgs, "--wal-segsize=1")
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), initArgs...)
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v: %s", err, out)
	}
	if c.tmpfs != "" {
		dropSpareWAL(t, bin, data)
	}
	s.args = []string{filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(s.port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_prepared_transactions=64", "-c", "shared_buffers=16MB"}
	if c.tmpfs != "" {
		s.args = append(s.args, "-c", "min_wal_size=2MB", "-c", "max_wal_size=8MB", "-c", "wal_recycle=off")
	}
	for _, kv := range c.settings {
		s.args = append(s.args, "-c", kv[0]+"="+kv[1])
	}
	s.Start()
	return s
}

// dropSpareWAL deletes the WAL segments initdb made ahead of its last checkpoint (recycled
// ones, never written since), with the server not running: a server whose disk is full would
// write into them instead of failing when its current segment fills.
func dropSpareWAL(t testing.TB, bin, data string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(bin, "pg_controldata"), data).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_controldata: %v: %s", err, out)
	}
	var redo string
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == "Latest checkpoint's REDO WAL file" {
			redo = strings.TrimSpace(v)
		}
	}
	if len(redo) != 24 {
		t.Fatalf("pg_controldata names no REDO WAL file:\n%s", out)
	}
	segs, _ := filepath.Glob(filepath.Join(data, "pg_wal", strings.Repeat("[0-9A-F]", 24)))
	for _, seg := range segs {
		if filepath.Base(seg) > redo {
			if err := os.Remove(seg); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// Open starts a private server of dialect ("mysql" or "postgres").
func Open(t testing.TB, dialect string, opts ...Option) *Server {
	t.Helper()
	if dialect == "mysql" {
		return MariaDB(t, opts...)
	}
	return Postgres(t, opts...)
}

func skipOrFail(t testing.TB, why string) {
	t.Helper()
	if testenv.Required() {
		t.Fatal(why)
	}
	t.Skip(why)
}

// tempDir is a temporary directory the server's user can write (t.TempDir's parents are
// private to root).
func tempDir(t testing.TB, cred *syscall.Credential) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "imago-private-db-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// freePort is a port nothing listens on, below the ephemeral range (testenv.FreeAddr).
func freePort(t testing.TB) int {
	_, port, err := net.SplitHostPort(testenv.FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return n
}

// Driver is the database/sql driver name of the server: "mysql" or "pgx".
func (s *Server) Driver() string {
	if s.driver == "mysql" {
		return "mysql"
	}
	return "pgx"
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// DSN is the server's DSN for its driver: database "test" of MariaDB (as root, no password),
// database "postgres" of PostgreSQL (as postgres, trust).
func (s *Server) DSN() string {
	if s.driver == "mysql" {
		return fmt.Sprintf("root@tcp(%s)/test", s.Addr())
	}
	return fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", s.Addr())
}

// DSNVia is DSN with addr (a proxy in front of the server) in place of the server's address.
func (s *Server) DSNVia(addr string) string { return strings.Replace(s.DSN(), s.Addr(), addr, 1) }

func (s *Server) rootDSN() string { return fmt.Sprintf("root@tcp(%s)/", s.Addr()) } // "test" may not exist yet

// DB opens a database/sql pool on DSN, closed when the test ends.
func (s *Server) DB() *sql.DB {
	s.t.Helper()
	db, err := sql.Open(s.Driver(), s.DSN())
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { db.Close() })
	return db
}

// Start starts the server on its data directory (again, after Kill) and waits until it
// answers.
func (s *Server) Start() {
	s.t.Helper()
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o666)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", s.args[0], err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	s.t.Cleanup(s.Kill)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err == nil {
			c.Close()
			if s.ping() == nil {
				return
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(s.logPath)
			s.t.Fatalf("%s exited at start-up:\n%s", s.args[0], log)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s did not answer within 30s", s.args[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) ping() error {
	dsn := s.DSN()
	if s.driver == "mysql" {
		dsn = s.rootDSN()
	}
	db, err := sql.Open(s.Driver(), dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Ping()
}

// Log is what the server wrote to its log so far (its error log, PostgreSQL's stderr).
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// Signal sends sig to the server's main process (PostgreSQL's postmaster): SIGTERM asks
// PostgreSQL for a smart shutdown (new connections refused, 57P03, until the sessions open end).
func (s *Server) Signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatal("privatedb: Signal to a server that is not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
}

// Exited reports whether the server's process has ended on its own (a PostgreSQL whose start
// after a PANIC failed, say); Start starts it again.
func (s *Server) Exited() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// Kill kills the server and all its processes with SIGKILL (as a crash) and waits for them
// to be gone. Killing a server already gone does nothing. It may be called from any
// goroutine.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	// PostgreSQL's backends each start a session of their own (setsid): find them by parent,
	// once the postmaster is stopped, so that it forks no backend after the list is taken
	// (one left alive holds the shared memory, and the restart refuses to start).
	select {
	case <-s.exited: // gone on its own: its pid may be another process's now
		s.cmd = nil
		return
	default:
	}
	main := s.cmd.Process.Pid
	syscall.Kill(main, syscall.SIGSTOP)
	pids := append(descendants(main), main)
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	<-s.exited
	for _, pid := range pids {
		for i := 0; i < 250 && syscall.Kill(pid, 0) == nil && !zombie(pid); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	s.cmd = nil
}

// descendants lists the processes under pid (from /proc).
func descendants(pid int) []int {
	children := map[int][]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		self, _ := strconv.Atoi(filepath.Base(filepath.Dir(s)))
		if len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], self)
		}
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			out = append(out, c)
			walk(c)
		}
	}
	walk(pid)
	return out
}

// zombie reports whether pid has exited and waits for its parent to reap it.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] == "Z"
}
