package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// namedValues is a repeatable flag of name=value pairs (-node n1=nats://…, -pid n1=1234).
type namedValues map[string]string

func (v namedValues) String() string {
	parts := make([]string, 0, len(v))
	for k, x := range v {
		parts = append(parts, k+"="+x)
	}
	return strings.Join(parts, ",")
}

func (v namedValues) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" || value == "" {
		return fmt.Errorf("%q: want name=value", s)
	}
	v[name] = value
	return nil
}

// cpuTicks returns utime+stime of process pid in clock ticks, from /proc/<pid>/stat.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read cpu time of pid %d: %w", pid, err)
	}
	// The command name (field 2) is in parentheses and may hold spaces: fields count from after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("read cpu time of pid %d: no ')' in /proc/%d/stat", pid, pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(3) ppid(4) … utime(14) stime(15), so indexes 11 and 12 here.
	if len(f) < 13 {
		return 0, fmt.Errorf("read cpu time of pid %d: %d fields in /proc/%d/stat", pid, len(f), pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("read cpu time of pid %d: utime %q stime %q", pid, f[11], f[12])
	}
	return ut + st, nil
}

// cpuSampler reads the CPU time of named server processes at the start and end of the measured run.
type cpuSampler struct {
	pids  map[string]int
	start map[string]int64
}

func newCPUSampler(pids namedValues) (*cpuSampler, error) {
	s := &cpuSampler{pids: map[string]int{}, start: map[string]int64{}}
	for name, p := range pids {
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("-pid %s=%s: not a process id", name, p)
		}
		s.pids[name] = pid
	}
	return s, nil
}

func (s *cpuSampler) begin() error {
	for name, pid := range s.pids {
		t, err := cpuTicks(pid)
		if err != nil {
			return fmt.Errorf("server %s: %w", name, err)
		}
		s.start[name] = t
	}
	return nil
}

// end returns each server's CPU seconds since begin.
func (s *cpuSampler) end(clkTck int) (map[string]float64, error) {
	out := make(map[string]float64, len(s.pids))
	for name, pid := range s.pids {
		t, err := cpuTicks(pid)
		if err != nil {
			return nil, fmt.Errorf("server %s: %w", name, err)
		}
		out[name] = float64(t-s.start[name]) / float64(clkTck)
	}
	return out, nil
}
