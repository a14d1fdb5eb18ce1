package main

// Server resource sampling from /proc: CPU time and resident memory of the
// server process under test, so a run reports what the load cost the server
// and not only what the clients saw.

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// clockTicksPerSecond is USER_HZ, the unit of utime/stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports, and reading it properly
// (sysconf) would need cgo.
const clockTicksPerSecond = 100

// ProcSample is one reading of the server's resources.
type ProcSample struct {
	CPUTicks uint64 // utime + stime
	RSSKB    int64  // VmRSS
	HWMKB    int64  // VmHWM: peak RSS over the process's life
}

// readProc reads /proc/<pid>/stat and /proc/<pid>/status together, which is
// all a run needs for its before, after and peak numbers.
func readProc(pid int) (ProcSample, error) {
	var s ProcSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	if s.CPUTicks, err = parseStatCPU(stat); err != nil {
		return s, err
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	if s.RSSKB, err = parseStatusKB(status, "VmRSS"); err != nil {
		return s, err
	}
	s.HWMKB, _ = parseStatusKB(status, "VmHWM")
	return s, nil
}

// parseStatCPU returns utime+stime from the contents of /proc/<pid>/stat.
// The command name (field 2) is in parentheses and may itself contain spaces
// and parentheses, so fields are counted from the last ')'.
func parseStatCPU(stat []byte) (uint64, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	fields := bytes.Fields(stat[end+1:])
	// After the name: field 3 (state) is fields[0]; utime is field 14 and
	// stime field 15, i.e. fields[11] and fields[12].
	if len(fields) < 13 {
		return 0, fmt.Errorf("stat: only %d fields", len(fields))
	}
	ut, err := strconv.ParseUint(string(fields[11]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat utime: %w", err)
	}
	st, err := strconv.ParseUint(string(fields[12]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat stime: %w", err)
	}
	return ut + st, nil
}

// parseStatusKB finds a "Key:   123 kB" line in /proc/<pid>/status and
// returns the number of kilobytes.
func parseStatusKB(status []byte, key string) (int64, error) {
	prefix := []byte(key + ":")
	for _, line := range bytes.Split(status, []byte{'\n'}) {
		if !bytes.HasPrefix(line, prefix) {
			continue
		}
		f := bytes.Fields(line[len(prefix):])
		if len(f) == 0 {
			break
		}
		v, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status %s: %w", key, err)
		}
		return v, nil
	}
	return 0, fmt.Errorf("status: no %s line", key)
}

// ticksToSeconds converts a utime+stime difference into CPU seconds.
func ticksToSeconds(t uint64) float64 {
	return float64(t) / clockTicksPerSecond
}
