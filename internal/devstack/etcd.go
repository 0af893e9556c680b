package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/etcdserver"
)

// EtcdCommand is the hidden command, under the reshard binary, that runs a stack's etcd:
// Up starts `reshard dev etcd --dir D --client-port P --peer-port Q`, and Down signals a
// process only if its command line is that, for its own folder.
var EtcdCommand = []string{"dev", "etcd"}

// RunEtcd is the hidden command's body: it serves etcd from dir until ctx ends (SIGTERM or
// SIGINT: a clean stop) or the server stops by itself (an error). It writes its pid to
// dir/etcd.pid first, so Down finds it even if Up died before recording it.
func RunEtcd(ctx context.Context, out io.Writer, dir string, clientPort, peerPort int) error {
	if dir == "" || clientPort == 0 || peerPort == 0 {
		return errors.New("dev etcd needs --dir, --client-port and --peer-port")
	}
	if err := os.WriteFile(filepath.Join(dir, PIDFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	srv, err := etcdserver.Start(ctx, filepath.Join(dir, "data"), etcdserver.Options{ClientPort: clientPort, PeerPort: peerPort})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s etcd serving on %s (pid %d)\n", time.Now().Format(time.RFC3339), srv.Endpoint(), os.Getpid())
	select {
	case <-ctx.Done():
		srv.Close()
		fmt.Fprintf(out, "%s etcd stopped\n", time.Now().Format(time.RFC3339))
		return nil
	case err := <-srv.Done():
		srv.Close()
		return fmt.Errorf("etcd stopped by itself: %w", err)
	}
}

// startEtcd re-executes this binary as EtcdCommand in its own session, so it outlives the
// command that started it and no terminal signal reaches it. The returned channel gets the
// process's exit while this process still runs.
func startEtcd(st *State) (<-chan error, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the reshard binary to run etcd: %w", err)
	}
	if err := os.MkdirAll(st.Etcd.Dir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(st.Etcd.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append(append([]string{}, EtcdCommand...), "--dir", st.Etcd.Dir,
		"--client-port", strconv.Itoa(st.Etcd.ClientPort), "--peer-port", strconv.Itoa(st.Etcd.PeerPort))
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = st.Etcd.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start etcd (%s %s): %w", exe, strings.Join(EtcdCommand, " "), err)
	}
	st.Etcd.PID = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return exited, nil
}

// waitEtcd waits until etcd answers a read through the real client.
func waitEtcd(ctx context.Context, st *State, exited <-chan error, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("etcd exited at start (%v); its log %s says:\n%s", err, st.Etcd.Log, logTail(st.Etcd.Log, 10))
		default:
		}
		err := probeEtcd(ctx, st.Etcd.Endpoint, time.Second)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd on %s did not answer within %s: %w (see %s)", st.Etcd.Endpoint, bound, err, st.Etcd.Log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func probeEtcd(ctx context.Context, endpoint string, timeout time.Duration) error {
	s, err := catalog.Open(ctx, catalog.ConnConfig{Endpoints: []string{endpoint}, DialTimeout: timeout}, Cluster)
	if err != nil {
		return err
	}
	return s.Close()
}

func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
