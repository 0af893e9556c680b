package devstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reshard/reshard/internal/pgcluster"
)

// Down stops the stack at --dir dirFlag and removes its folder. It returns the absolute
// folder and whether there was one (none is not an error). A folder without a state file
// or an etcd pid file is refused, never removed; one where something cannot be stopped is
// kept, so that Down can be run again.
func Down(ctx context.Context, dirFlag string) (dir string, existed bool, err error) {
	dir, err = AbsDir(dirFlag)
	if err != nil {
		return "", false, err
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return dir, false, nil
	}
	st, err := ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		if _, perr := os.Stat(filepath.Join(dir, "etcd", PIDFile)); perr != nil {
			return dir, true, fmt.Errorf("%s does not look like a dev stack (no %s): not touching it", dir, StateFile)
		}
		st = nil // a stack whose state file is gone: go by what is in the folder
	} else if err != nil {
		st = nil
	}
	// Don't let Ctrl-C stop the teardown half-way.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancel()
	if err := teardown(cctx, dir, st); err != nil {
		return dir, true, fmt.Errorf("%w; %s kept so you can retry `reshard dev down --dir %s`", err, dir, dirFlag)
	}
	if err := os.RemoveAll(dir); err != nil {
		return dir, true, fmt.Errorf("remove %s: %w", dir, err)
	}
	return dir, true, nil
}

// teardown stops every PostgreSQL cluster and the etcd process of the stack in dir. It
// works from the state when there is one and from the folder's contents otherwise, and
// returns an error only if something still runs at the end.
func teardown(ctx context.Context, dir string, st *State) error {
	var mu sync.Mutex
	var problems []string
	var wg sync.WaitGroup
	for d, port := range clusterDirs(dir, st) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := stopCluster(ctx, d, port); err != nil {
				mu.Lock()
				problems = append(problems, err.Error())
				mu.Unlock()
			}
		}()
	}
	etcdDir, pids := etcdPIDs(dir, st)
	for pid := range pids {
		if !isStackEtcd(pid, etcdDir) {
			continue // gone, or the pid now belongs to another program
		}
		if err := stopProcess(ctx, pid, syscall.SIGTERM, 15*time.Second); err != nil {
			mu.Lock()
			problems = append(problems, fmt.Sprintf("etcd (pid %d): %v", pid, err))
			mu.Unlock()
		}
	}
	wg.Wait()
	if len(problems) > 0 {
		sort.Strings(problems)
		return errors.New("could not stop everything: " + strings.Join(problems, "; "))
	}
	return nil
}

// clusterDirs are the stack's cluster folders with their ports (0: unknown): every one the
// state lists and every one in the folder, whether or not the state lists it.
func clusterDirs(dir string, st *State) map[string]int {
	clusters := map[string]int{}
	if st != nil {
		for _, s := range st.Shards {
			clusters[s.Dir] = s.Port
		}
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "shards")); err == nil {
		for _, e := range ents {
			d := filepath.Join(dir, "shards", e.Name())
			if _, ok := clusters[d]; !ok {
				clusters[d] = 0
			}
		}
	}
	return clusters
}

// etcdPIDs are the etcd folder and the pids of the state and of the pid file (the etcd
// process writes it itself).
func etcdPIDs(dir string, st *State) (string, map[int]bool) {
	pids := map[int]bool{}
	etcdDir := filepath.Join(dir, "etcd")
	if st != nil {
		if st.Etcd.PID > 0 {
			pids[st.Etcd.PID] = true
		}
		if st.Etcd.Dir != "" {
			etcdDir = st.Etcd.Dir
		}
	}
	if b, err := os.ReadFile(filepath.Join(etcdDir, PIDFile)); err == nil {
		if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p > 0 {
			pids[p] = true
		}
	}
	return etcdDir, pids
}

func stopCluster(ctx context.Context, dir string, port int) error {
	pidFile := filepath.Join(dir, "data", "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil // never started or stopped already
	}
	c, oerr := pgcluster.Open(dir, port)
	if oerr == nil {
		if err := c.Stop(ctx); err == nil {
			return nil
		}
	}
	// pg_ctl could not do it: signal the postmaster ourselves (SIGQUIT is an immediate
	// shutdown; the dev stack's data is about to be removed anyway).
	pid, perr := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if perr != nil || pid <= 0 {
		return fmt.Errorf("PostgreSQL in %s: cannot read its pid from %s", dir, pidFile)
	}
	if !ProcessAlive(pid) {
		return nil
	}
	if err := stopProcess(ctx, pid, syscall.SIGQUIT, 30*time.Second); err != nil {
		return fmt.Errorf("PostgreSQL in %s (pid %d): %w", dir, pid, err)
	}
	return nil
}

// isStackEtcd reports whether pid runs EtcdCommand for etcdDir, so a recycled pid is never
// signalled.
func isStackEtcd(pid int, etcdDir string) bool {
	if !ProcessAlive(pid) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	hasCommand, hasDir := false, false
	for i, a := range args {
		if a == EtcdCommand[1] && i > 0 && args[i-1] == EtcdCommand[0] {
			hasCommand = true
		}
		if a == "--dir" && i+1 < len(args) && filepath.Clean(args[i+1]) == filepath.Clean(etcdDir) {
			hasDir = true
		}
	}
	return hasCommand && hasDir
}

// ProcessAlive reports whether pid exists and is not a zombie waiting to be reaped.
func ProcessAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// The state follows the command name in parentheses, which may itself hold spaces.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// stopProcess sends sig, waits up to grace for the process to end, then kills it.
func stopProcess(ctx context.Context, pid int, sig syscall.Signal, grace time.Duration) error {
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	if waitGone(ctx, pid, grace) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if waitGone(ctx, pid, 5*time.Second) {
		return nil
	}
	return fmt.Errorf("still running after %s and SIGKILL", grace)
}

func waitGone(ctx context.Context, pid int, bound time.Duration) bool {
	deadline := time.Now().Add(bound)
	for ProcessAlive(pid) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}
