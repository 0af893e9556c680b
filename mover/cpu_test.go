package mover

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clusterCPU is the CPU time used so far by a PostgreSQL cluster: the postmaster, its live
// children and the children it has reaped (Linux /proc; 0 elsewhere). The difference over
// a run is the work the run cost that server, whatever else the machine was doing.
func clusterCPU(dataDir string) time.Duration {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	pm, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0
	}
	total := procTicks(pm, true)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == pm {
			continue
		}
		if ppid, ok := procParent(pid); ok && ppid == pm {
			total += procTicks(pid, false)
		}
	}
	return time.Duration(total) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// procStat returns the fields of /proc/pid/stat after the command name.
func procStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return nil
	}
	return strings.Fields(s[i+2:])
}

func procParent(pid int) (int, bool) {
	f := procStat(pid)
	if len(f) < 2 {
		return 0, false
	}
	p, err := strconv.Atoi(f[1])
	return p, err == nil
}

// procTicks is utime+stime (and the reaped children's, with children) in clock ticks.
func procTicks(pid int, children bool) int64 {
	f := procStat(pid)
	if len(f) < 15 {
		return 0
	}
	var n int64
	last := 12
	if children {
		last = 14
	}
	for _, x := range f[11 : last+1] {
		v, _ := strconv.ParseInt(x, 10, 64)
		n += v
	}
	return n
}
