// Command devenv runs the private Kubernetes control plane and Postgres
// instances that Manifold's end-to-end tests and sandbox use, all on free
// 127.0.0.1 ports under one directory.
//
//	devenv controlplane --dir D --bin B   etcd, kube-apiserver, kube-controller-manager
//	devenv postgres --dir D [--tls]       a Postgres instance (initdb + pg_ctl); --tls serves
//	                                      TLS for "localhost", with its CA in D/tls/ca.crt
//	devenv mariadb --dir D                a MariaDB server (Debian's mariadb-server), with an
//	                                      "admin" user whose password is in env.json
//	devenv exec --dir D -- CMD ARGS...    any program, logging to D/CMD.log
//
// When everything is up it writes D/env.json and prints the same JSON as one
// line on stdout. It then runs until SIGINT or SIGTERM, and stops what it
// started, in reverse order.
//
// With --stdin it also reads commands, one per line, and answers each with
// one line ("ok" or "error: ..."); end of input stops everything. A test
// process keeps the pipe open for as long as it lives, so a crashed test
// leaves nothing running behind it. The commands are:
//
//	controlplane: restart-apiserver
//	postgres:     stop, start, kill (immediate stop, no clean shutdown)
//	exec:         stop (SIGTERM), kill (SIGKILL), start
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: devenv controlplane|postgres --dir DIR [--bin DIR] [--stdin]")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	dir := fs.String("dir", "", "directory for data, certificates, logs and env.json")
	bin := fs.String("bin", "", "directory of etcd, kube-apiserver and kube-controller-manager")
	stdin := fs.Bool("stdin", false, "read commands from stdin; stop at end of input")
	cleanup := fs.Bool("cleanup", false, "remove --dir after stopping")
	withTLS := fs.Bool("tls", false, "postgres: serve TLS, with a certificate for localhost from a CA of its own")
	listen := fs.String("listen", "", "postgres: an address to listen on besides 127.0.0.1 (password logins from anywhere)")
	_ = fs.Parse(os.Args[2:])
	if *dir == "" {
		fatal(errors.New("--dir is required"))
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fatal(err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		fatal(err)
	}

	var svc service
	switch mode {
	case "controlplane":
		if *bin == "" {
			exe, _ := os.Executable()
			*bin = filepath.Dir(exe)
		}
		svc = &controlPlane{dir: abs, bin: *bin}
	case "postgres":
		svc = &postgres{dir: abs, tls: *withTLS, listen: *listen}
	case "mariadb":
		svc = &mariadb{dir: abs}
	case "exec":
		if fs.NArg() == 0 {
			fatal(errors.New("exec needs a command after --"))
		}
		svc = &program{dir: abs, args: fs.Args()}
	default:
		fatal(fmt.Errorf("unknown mode %q", mode))
	}

	env, err := svc.start()
	if err != nil {
		svc.stop()
		fatal(err)
	}
	data, _ := json.Marshal(env)
	if err := os.WriteFile(filepath.Join(abs, "env.json"), append(data, '\n'), 0o644); err != nil {
		svc.stop()
		fatal(err)
	}
	fmt.Println(string(data))

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	if *stdin {
		go func() {
			scanner := bufio.NewScanner(os.Stdin)
			for scanner.Scan() {
				cmd := strings.TrimSpace(scanner.Text())
				if cmd == "" {
					continue
				}
				if err := svc.command(cmd); err != nil {
					fmt.Printf("error: %v\n", strings.ReplaceAll(err.Error(), "\n", " "))
				} else {
					fmt.Println("ok")
				}
			}
			close(done)
		}()
	}
	select {
	case <-signals:
	case <-done:
	}
	svc.stop()
	if *cleanup {
		_ = os.RemoveAll(abs)
	}
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "devenv: %v\n", err)
	os.Exit(1)
}

type service interface {
	start() (map[string]any, error)
	command(string) error
	stop()
}

// ---------------------------------------------------------------------------
// Processes

type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done is closed
}

// spawn starts a child that logs to dir/name.log and dies with us, even if
// we are killed (Pdeathsig).
func spawn(dir, name, path string, args []string, cred *syscall.Credential) (*process, error) {
	logFile, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM, then SIGKILL to its process group after the grace
// period. A grace of zero kills at once.
func (p *process) stop(grace time.Duration) {
	if p == nil {
		return
	}
	if grace > 0 {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// waitFor polls check until it succeeds, the process exits, or time runs out.
func waitFor(p *process, logDir string, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.name, p.err,
				filepath.Join(logDir, p.name+".log"), tail(filepath.Join(logDir, p.name+".log"), 20))
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %s: %v; last lines of its log:\n%s", p.name, timeout, last,
		tail(filepath.Join(logDir, p.name+".log"), 20))
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePort asks the kernel for an unused 127.0.0.1 port. Another process may
// take it before we bind it, so callers retry a failed start.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func retry(attempts int, f func() error) error {
	var err error
	for i := 0; i < attempts; i++ {
		if err = f(); err == nil {
			return nil
		}
	}
	return err
}

// ---------------------------------------------------------------------------
// Control plane

type controlPlane struct {
	dir, bin             string
	etcd, apiserver, kcm *process
	apiserverArgs        []string
	apiserverPort        int
	adminClient          *http.Client
}

func (c *controlPlane) start() (map[string]any, error) {
	pki := filepath.Join(c.dir, "pki")
	if err := writePKI(pki); err != nil {
		return nil, err
	}
	if err := retry(3, c.startEtcd); err != nil {
		return nil, err
	}
	if err := retry(3, c.startAPIServer); err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(c.dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, pki, c.apiserverPort); err != nil {
		return nil, err
	}
	var err error
	c.kcm, err = spawn(c.dir, "kube-controller-manager", filepath.Join(c.bin, "kube-controller-manager"), []string{
		"--kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--controllers=namespace-controller,garbage-collector-controller",
		"--concurrent-namespace-syncs=5",
		"--concurrent-gc-syncs=5",
	}, nil)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"kubeconfig": kubeconfig,
		"server":     fmt.Sprintf("https://127.0.0.1:%d", c.apiserverPort),
		"pid":        os.Getpid(),
	}, nil
}

func (c *controlPlane) startEtcd() error {
	client, err := freePort()
	if err != nil {
		return err
	}
	peer, err := freePort()
	if err != nil {
		return err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", client)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	c.etcd, err = spawn(c.dir, "etcd", filepath.Join(c.bin, "etcd"), []string{
		"--name=devenv",
		"--data-dir=" + filepath.Join(c.dir, "etcd"),
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=devenv=" + peerURL,
		"--unsafe-no-fsync",
		"--log-level=warn",
	}, nil)
	if err != nil {
		return err
	}
	err = waitFor(c.etcd, c.dir, 30*time.Second, func() error {
		resp, err := http.Get(clientURL + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("health: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		c.etcd.stop(5 * time.Second)
		c.etcd = nil
		return err
	}
	c.apiserverArgs = append(c.apiserverArgs[:0], "--etcd-servers="+clientURL)
	return nil
}

func (c *controlPlane) startAPIServer() error {
	pki := filepath.Join(c.dir, "pki")
	if c.apiserverPort == 0 {
		port, err := freePort()
		if err != nil {
			return err
		}
		c.apiserverPort = port
		c.apiserverArgs = append(c.apiserverArgs,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", port),
			"--tls-cert-file="+filepath.Join(pki, "apiserver.crt"),
			"--tls-private-key-file="+filepath.Join(pki, "apiserver.key"),
			"--client-ca-file="+filepath.Join(pki, "ca.crt"),
			fmt.Sprintf("--service-account-issuer=https://127.0.0.1:%d", port),
			"--service-account-key-file="+filepath.Join(pki, "sa.pub"),
			"--service-account-signing-key-file="+filepath.Join(pki, "sa.key"),
			"--authorization-mode=RBAC",
			"--service-cluster-ip-range=10.0.0.0/24",
			"--endpoint-reconciler-type=none",
			"--disable-admission-plugins=ServiceAccount",
			"--allow-privileged=true",
			"--profiling=true", // pprof for the benchmarks, behind the apiserver's authentication
			"--event-ttl=1h",
		)
	}
	var err error
	c.apiserver, err = spawn(c.dir, "kube-apiserver", filepath.Join(c.bin, "kube-apiserver"), c.apiserverArgs, nil)
	if err != nil {
		return err
	}
	if c.adminClient == nil {
		if c.adminClient, err = adminHTTPClient(pki); err != nil {
			return err
		}
	}
	base := fmt.Sprintf("https://127.0.0.1:%d", c.apiserverPort)
	get := func(path string) error {
		resp, err := c.adminClient.Get(base + path)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return nil
	}
	err = waitFor(c.apiserver, c.dir, 120*time.Second, func() error {
		if err := get("/readyz"); err != nil {
			return err
		}
		return get("/api/v1/namespaces/default")
	})
	if err != nil {
		c.apiserver.stop(5 * time.Second)
		c.apiserver = nil
		// The port may have been taken under us: pick another next time.
		c.apiserverArgs = c.apiserverArgs[:1]
		c.apiserverPort = 0
		return err
	}
	return nil
}

func (c *controlPlane) command(cmd string) error {
	switch cmd {
	case "restart-apiserver":
		c.apiserver.stop(10 * time.Second)
		return c.startAPIServer()
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func (c *controlPlane) stop() {
	c.kcm.stop(5 * time.Second)
	c.apiserver.stop(10 * time.Second)
	c.etcd.stop(5 * time.Second)
}

func adminHTTPClient(pki string) (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "admin.crt"), filepath.Join(pki, "admin.key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}},
	}, nil
}

// certAuthority is a CA made for one run, which signs the leaf
// certificates of that run.
type certAuthority struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	now  time.Time
}

// newCA makes a CA and writes its certificate to dir/ca.crt.
func newCA(dir, name string) (*certAuthority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	if err := writePEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE", der); err != nil {
		return nil, err
	}
	return &certAuthority{dir: dir, cert: cert, key: key, now: now}, nil
}

// leaf writes dir/name.crt and dir/name.key, signed by the CA.
func (ca *certAuthority) leaf(name string, serial int64, subject pkix.Name, usage x509.ExtKeyUsage, ips []net.IP, dns []string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      subject,
		NotBefore:    ca.now,
		NotAfter:     ca.now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  ips,
		DNSNames:     dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(ca.dir, name+".crt"), "CERTIFICATE", der); err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(filepath.Join(ca.dir, name+".key"), "EC PRIVATE KEY", keyDER)
}

// writePKI makes a CA, the apiserver's serving certificate (for 127.0.0.1),
// an admin client certificate in group system:masters, and the service
// account signing key.
func writePKI(dir string) error {
	ca, err := newCA(dir, "manifold-devenv-ca")
	if err != nil {
		return err
	}
	if err := ca.leaf("apiserver", 2, pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth,
		[]net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"}); err != nil {
		return err
	}
	if err := ca.leaf("admin", 3, pkix.Name{CommonName: "manifold-admin", Organization: []string{"system:masters"}},
		x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	saDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "sa.key"), "EC PRIVATE KEY", saDER); err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pubDER)
}

func writePEM(path, kind string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}

// writeKubeconfig writes an admin kubeconfig with the certificates inline,
// so that it keeps working when copied elsewhere.
func writeKubeconfig(path, pki string, port int) error {
	read := func(name string) (string, error) {
		data, err := os.ReadFile(filepath.Join(pki, name))
		return base64.StdEncoding.EncodeToString(data), err
	}
	ca, err := read("ca.crt")
	if err != nil {
		return err
	}
	crt, err := read("admin.crt")
	if err != nil {
		return err
	}
	key, err := read("admin.key")
	if err != nil {
		return err
	}
	config := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: manifold-devenv
  cluster:
    server: https://127.0.0.1:%d
    certificate-authority-data: %s
users:
- name: admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: manifold-devenv
  context:
    cluster: manifold-devenv
    user: admin
    namespace: default
current-context: manifold-devenv
`, port, ca, crt, key)
	return os.WriteFile(path, []byte(config), 0o600)
}

// ---------------------------------------------------------------------------
// Postgres

type postgres struct {
	dir, binDir, dataDir, password string
	port                           int
	cred                           *syscall.Credential
	// tls: serve TLS with a certificate for "localhost" only (not for
	// 127.0.0.1, so that verify-full by address fails), signed by a CA
	// of its own in dir/tls/ca.crt.
	tls bool
	// listen is an address to listen on besides 127.0.0.1 (hack/cluster's
	// node address, which pods reach), where any client may log in with a
	// password.
	listen string
}

// pgBinDir finds initdb and pg_ctl from Debian's postgresql package: the
// newest /usr/lib/postgresql/<version>/bin, unless PG_BINDIR says otherwise.
func pgBinDir() (string, error) {
	if dir := os.Getenv("PG_BINDIR"); dir != "" {
		return dir, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi < vj
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i], nil
		}
	}
	return "", errors.New("no /usr/lib/postgresql/*/bin/initdb: install Debian's postgresql and postgresql-contrib")
}

// runAs returns the credential that initdb and the server run under: initdb
// refuses to run as root, so as root we switch to the postgres user (or
// nobody).
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("running as root, and neither user postgres nor nobody exists to run initdb as")
}

func (p *postgres) run(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(p.binDir, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	cmd.Dir = p.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v\n%s", name, err, out)
	}
	return nil
}

func (p *postgres) start() (map[string]any, error) {
	var err error
	if p.binDir, err = pgBinDir(); err != nil {
		return nil, err
	}
	if p.cred, err = runAs(); err != nil {
		return nil, err
	}
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	p.password = hex.EncodeToString(secret)
	p.dataDir = filepath.Join(p.dir, "data")
	pwfile := filepath.Join(p.dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if p.cred != nil {
		_ = os.Chmod(p.dir, 0o755)
		if err := os.Chown(p.dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return nil, err
		}
		if err := os.Chown(pwfile, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return nil, err
		}
	}
	// Local (unix socket) connections are trusted, for the tests' own admin
	// work; TCP needs a password, so that wrong credentials really fail.
	if err := p.run("initdb", "-D", p.dataDir, "-U", "postgres", "--pwfile", pwfile, "-E", "UTF8",
		"--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"); err != nil {
		return nil, err
	}
	_ = os.Remove(pwfile)
	if p.listen != "" {
		hba, err := os.OpenFile(filepath.Join(p.dataDir, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		_, err = hba.WriteString("host all all 0.0.0.0/0 scram-sha-256\n")
		hba.Close()
		if err != nil {
			return nil, err
		}
	}
	if p.tls {
		ca, err := newCA(filepath.Join(p.dir, "tls"), "manifold-devenv-postgres-ca")
		if err != nil {
			return nil, err
		}
		if err := ca.leaf("server", 2, pkix.Name{CommonName: "localhost"}, x509.ExtKeyUsageServerAuth, nil, []string{"localhost"}); err != nil {
			return nil, err
		}
		if p.cred != nil {
			for _, f := range []string{"", "server.crt", "server.key", "ca.crt"} {
				if err := os.Chown(filepath.Join(p.dir, "tls", f), int(p.cred.Uid), int(p.cred.Gid)); err != nil {
					return nil, err
				}
			}
		}
	}
	err = retry(3, func() error {
		if p.port, err = freePort(); err != nil {
			return err
		}
		listen := "127.0.0.1"
		if p.listen != "" {
			listen += "," + p.listen
		}
		conf := fmt.Sprintf(`
listen_addresses = '%s'
port = %d
unix_socket_directories = '%s'
max_connections = 400
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
log_min_messages = warning
`, listen, p.port, p.dir)
		if p.tls {
			conf += fmt.Sprintf("ssl = on\nssl_cert_file = '%s'\nssl_key_file = '%s'\n",
				filepath.Join(p.dir, "tls", "server.crt"), filepath.Join(p.dir, "tls", "server.key"))
		}
		if err := os.WriteFile(filepath.Join(p.dataDir, "postgresql.auto.conf"), []byte(conf), 0o600); err != nil {
			return err
		}
		if p.cred != nil {
			_ = os.Chown(filepath.Join(p.dataDir, "postgresql.auto.conf"), int(p.cred.Uid), int(p.cred.Gid))
		}
		return p.command("start")
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"host":     "127.0.0.1",
		"port":     p.port,
		"user":     "postgres",
		"password": p.password,
		"socket":   p.dir,
		"dataDir":  p.dataDir,
		"binDir":   p.binDir,
		"uri":      fmt.Sprintf("postgresql://postgres:%s@127.0.0.1:%d/postgres", p.password, p.port),
		"pid":      os.Getpid(),
		"caFile":   map[bool]string{true: filepath.Join(p.dir, "tls", "ca.crt")}[p.tls],
	}, nil
}

func (p *postgres) command(cmd string) error {
	logFile := filepath.Join(p.dir, "postgres.log")
	switch cmd {
	case "start":
		return p.run("pg_ctl", "-D", p.dataDir, "-l", logFile, "-w", "-t", "60", "start")
	case "stop":
		return p.run("pg_ctl", "-D", p.dataDir, "-m", "fast", "-w", "-t", "60", "stop")
	case "kill":
		return p.run("pg_ctl", "-D", p.dataDir, "-m", "immediate", "-w", "-t", "60", "stop")
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func (p *postgres) stop() {
	if p.dataDir == "" {
		return
	}
	if _, err := os.Stat(filepath.Join(p.dataDir, "postmaster.pid")); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(p.binDir, "pg_ctl"), "-D", p.dataDir, "-m", "fast", "-w", "stop")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
		_ = cmd.Run()
	}
}

// ---------------------------------------------------------------------------
// MariaDB

// mariadb is a private MariaDB server on a free 127.0.0.1 port, its data in
// dir/data: a real source for the mysql_fdw tests.
type mariadb struct {
	dir, password string
	port          int
	proc          *process
	cred          *syscall.Credential
}

func (m *mariadb) socket() string { return filepath.Join(m.dir, "mysqld.sock") }

func (m *mariadb) start() (map[string]any, error) {
	var err error
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	m.password = hex.EncodeToString(secret)
	osUser := ""
	if os.Geteuid() == 0 {
		for _, name := range []string{"mysql", "nobody"} {
			if u, err := user.Lookup(name); err == nil {
				uid, _ := strconv.Atoi(u.Uid)
				gid, _ := strconv.Atoi(u.Gid)
				m.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
				osUser = name
				break
			}
		}
		_ = os.Chmod(m.dir, 0o755)
		if m.cred != nil {
			_ = os.Chown(m.dir, int(m.cred.Uid), int(m.cred.Gid))
		}
	}
	install := exec.Command("mariadb-install-db", "--no-defaults", "--datadir="+filepath.Join(m.dir, "data"),
		"--auth-root-authentication-method=normal", "--skip-test-db")
	if osUser != "" {
		install.Args = append(install.Args, "--user="+osUser)
	}
	if out, err := install.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadb-install-db: %v\n%s", err, out)
	}
	err = retry(3, func() error {
		if m.port, err = freePort(); err != nil {
			return err
		}
		return m.command("start")
	})
	if err != nil {
		return nil, err
	}
	// Root logs in through the socket only; tests use "admin" over TCP.
	setup := fmt.Sprintf("CREATE USER 'admin'@'127.0.0.1' IDENTIFIED BY '%s'; GRANT ALL ON *.* TO 'admin'@'127.0.0.1' WITH GRANT OPTION;", m.password)
	if out, err := exec.Command("mariadb", "--no-defaults", "-uroot", "-S", m.socket(), "-e", setup).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadb setup: %v\n%s", err, out)
	}
	return map[string]any{"host": "127.0.0.1", "port": m.port, "user": "admin", "password": m.password, "pid": os.Getpid()}, nil
}

func (m *mariadb) command(cmd string) error {
	switch cmd {
	case "start":
		args := []string{"--no-defaults", "--datadir=" + filepath.Join(m.dir, "data"), "--socket=" + m.socket(),
			"--port=" + strconv.Itoa(m.port), "--bind-address=127.0.0.1", "--skip-name-resolve", "--skip-log-bin",
			"--pid-file=" + filepath.Join(m.dir, "mysqld.pid"), "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M"}
		var err error
		if m.proc, err = spawn(m.dir, "mariadbd", "mariadbd", args, m.cred); err != nil {
			return err
		}
		return waitFor(m.proc, m.dir, 60*time.Second, func() error {
			conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", m.port), time.Second)
			if err != nil {
				return err
			}
			conn.Close()
			_, err = os.Stat(m.socket())
			return err
		})
	case "stop":
		m.proc.stop(30 * time.Second)
		return nil
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func (m *mariadb) stop() { m.proc.stop(30 * time.Second) }

// ---------------------------------------------------------------------------
// Any program

type program struct {
	dir  string
	args []string
	proc *process
}

func (p *program) start() (map[string]any, error) {
	if err := p.command("start"); err != nil {
		return nil, err
	}
	return map[string]any{"pid": p.proc.cmd.Process.Pid, "log": filepath.Join(p.dir, p.name()+".log")}, nil
}

func (p *program) name() string { return filepath.Base(p.args[0]) }

func (p *program) command(cmd string) error {
	switch cmd {
	case "start":
		if p.proc != nil && p.proc.running() {
			return errors.New("already running")
		}
		var err error
		p.proc, err = spawn(p.dir, p.name(), p.args[0], p.args[1:], nil)
		return err
	case "stop":
		p.proc.stop(10 * time.Second)
		return nil
	case "kill":
		p.proc.stop(0)
		return nil
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func (p *program) stop() { p.proc.stop(10 * time.Second) }
