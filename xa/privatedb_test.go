package xa

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
	"syscall"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
)

// A private database server: a MariaDB or PostgreSQL of the test's own, in a temporary
// directory on a port of its own, that the test can kill -9 at the moment it chooses and start
// again on the same data (as a crash and a restart). The shared servers (which other tests use
// at the same time) are never touched. Starting one takes about a second.

// privateDB is one private server.
type privateDB struct {
	t       *testing.T
	driver  string // "mysql" or "postgres"
	dir     string
	port    int
	args    []string
	cred    *syscall.Credential // PostgreSQL refuses to run as root: run as postgres
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
}

const (
	mariadbInstallDB = "/usr/bin/mariadb-install-db"
	pgBinGlob        = "/usr/lib/postgresql/*/bin"
)

// privateMariaDB starts a private MariaDB (skipped when its binaries are missing, unless the
// services are required) and returns it with a pool on its database "test", opened as serve
// opens a resource's.
func privateMariaDB(t *testing.T) (*privateDB, *sql.DB) {
	t.Helper()
	for _, bin := range []string{mariadbd, mariadbInstallDB} {
		if _, err := os.Stat(bin); err != nil {
			skipOrFail(t, "private MariaDB: "+err.Error())
		}
	}
	dir := privateDir(t, nil)
	data := filepath.Join(dir, "data")
	install := []string{"--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal", "--skip-test-db"}
	if os.Geteuid() == 0 {
		install = append(install, "--user=root")
	}
	if out, err := exec.Command(mariadbInstallDB, install...).CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v: %s", err, out)
	}
	p := &privateDB{t: t, driver: "mysql", dir: dir, port: freePort(t), logPath: filepath.Join(dir, "server.log")}
	p.args = []string{mariadbd, "--no-defaults", "--datadir=" + data, "--socket=" + filepath.Join(dir, "sock"),
		"--port=" + strconv.Itoa(p.port), "--bind-address=127.0.0.1", "--skip-grant-tables", "--skip-name-resolve",
		"--pid-file=" + filepath.Join(dir, "pid"), "--innodb-buffer-pool-size=16M", "--log-error=" + p.logPath}
	if os.Geteuid() == 0 {
		p.args = append(p.args, "--user=root")
	}
	p.start()
	root, err := sql.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/", p.port))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.Exec("CREATE DATABASE IF NOT EXISTS test"); err != nil {
		t.Fatal(err)
	}
	db, err := OpenMySQLDB(p.dsn())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return p, db
}

// privatePostgres starts a private PostgreSQL (max_prepared_transactions 64) and returns it
// with a pool on its database "postgres".
func privatePostgres(t *testing.T) (*privateDB, *sql.DB) {
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
	dir := privateDir(t, cred)
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v: %s", err, out)
	}
	p := &privateDB{t: t, driver: "postgres", dir: dir, port: freePort(t), cred: cred, logPath: filepath.Join(dir, "server.log")}
	p.args = []string{filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(p.port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_prepared_transactions=64", "-c", "shared_buffers=16MB"}
	p.start()
	db, err := sql.Open("pgx", p.dsn())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return p, db
}

func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if testenv.Required() {
		t.Fatal(why)
	}
	t.Skip(why)
}

// privateDir is a temporary directory the server's user can write (t.TempDir's parents are
// private to root).
func privateDir(t *testing.T, cred *syscall.Credential) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "imago-xa-db-")
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
func freePort(t *testing.T) int {
	_, port, err := net.SplitHostPort(testenv.FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return n
}

func (p *privateDB) dsn() string {
	if p.driver == "mysql" {
		return fmt.Sprintf("root@tcp(127.0.0.1:%d)/test", p.port)
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// start starts the server on its data directory and waits until it answers.
func (p *privateDB) start() {
	p.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o666)
	if err != nil {
		p.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.args[0], err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	p.cmd, p.exited = cmd, exited
	p.t.Cleanup(p.kill)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.port), time.Second)
		if err == nil {
			c.Close()
			if p.ping() == nil {
				return
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(p.logPath)
			p.t.Fatalf("%s exited at start-up:\n%s", p.args[0], log)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not answer within 30s", p.args[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *privateDB) ping() error {
	driver, dsn := "pgx", p.dsn()
	if p.driver == "mysql" {
		driver, dsn = "mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/", p.port) // "test" may not exist yet
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Ping()
}

// kill kills the server and all its processes with SIGKILL (as a crash) and waits for them to
// be gone. Killing a server already gone does nothing.
func (p *privateDB) kill() {
	if p.cmd == nil {
		return
	}
	// PostgreSQL's backends each start a session of their own (setsid): find them by parent.
	pids := append(descendants(p.cmd.Process.Pid), p.cmd.Process.Pid)
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	<-p.exited
	for _, pid := range pids {
		for i := 0; i < 250 && syscall.Kill(pid, 0) == nil && !zombie(pid); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	p.cmd = nil
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
