package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// runPodExec runs inside the container process's own mount namespace (the node agent
// starts it with CLONE_NEWNS; Go makes / recursively private first): it bind-mounts the
// pod's volumes at their mountPaths, then replaces itself with the container's command.
func runPodExec(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: kfaas-cluster pod-exec SPEC.json")
		return 2
	}
	raw, err := os.ReadFile(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "pod-exec: %v\n", err)
		return 127
	}
	var spec execSpec
	if err := json.Unmarshal(raw, &spec); err != nil {
		fmt.Fprintf(os.Stderr, "pod-exec: %v\n", err)
		return 127
	}
	for _, m := range spec.Mounts {
		fi, err := os.Stat(m.Source)
		if err != nil {
			fmt.Fprintf(os.Stderr, "pod-exec: mount %s: %v\n", m.Source, err)
			return 127
		}
		if fi.IsDir() {
			err = mkdirLogged(m.Target, spec.CreatedLog)
		} else if _, serr := os.Stat(m.Target); serr != nil {
			if err = mkdirLogged(filepath.Dir(m.Target), spec.CreatedLog); err == nil {
				err = os.WriteFile(m.Target, nil, 0o644)
				logCreated(spec.CreatedLog, m.Target)
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "pod-exec: mount target %s: %v\n", m.Target, err)
			return 127
		}
		if err := syscall.Mount(m.Source, m.Target, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			fmt.Fprintf(os.Stderr, "pod-exec: bind %s on %s: %v\n", m.Source, m.Target, err)
			return 127
		}
		if m.ReadOnly {
			_ = syscall.Mount("", m.Target, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY|syscall.MS_REC, "")
		}
	}
	if spec.Dir != "" {
		_ = os.MkdirAll(spec.Dir, 0o755)
		if err := os.Chdir(spec.Dir); err != nil {
			fmt.Fprintf(os.Stderr, "pod-exec: workingDir %s: %v\n", spec.Dir, err)
			return 127
		}
	}
	bin := spec.Argv[0]
	if !strings.Contains(bin, "/") {
		// Look the command up on the container's PATH, not the agent's.
		for _, e := range spec.Env {
			if p, ok := strings.CutPrefix(e, "PATH="); ok {
				_ = os.Setenv("PATH", p)
			}
		}
		if p, err := exec.LookPath(bin); err == nil {
			bin = p
		} else {
			fmt.Fprintf(os.Stderr, "pod-exec: %s: executable not found in PATH\n", bin)
			return 127
		}
	}
	err = syscall.Exec(bin, spec.Argv, spec.Env)
	fmt.Fprintf(os.Stderr, "pod-exec: exec %s: %v\n", bin, err)
	return 127
}

// mkdirLogged is os.MkdirAll that records each directory it creates.
func mkdirLogged(dir, logPath string) error {
	var missing []string
	for d := filepath.Clean(dir); d != "/" && d != "."; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		missing = append(missing, d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range missing {
		logCreated(logPath, d)
	}
	return nil
}

func logCreated(logPath, path string) {
	if logPath == "" {
		return
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintln(f, path)
}

// removeCreated removes, deepest first, the mount targets pod-exec created on the host, when
// they are still empty (nothing else can have been put there by anyone else then).
func removeCreated(logPath string) {
	if otherNodeAgents() {
		// Another cluster's pods may use these directories as mount points right now.
		return
	}
	raw, err := os.ReadFile(logPath)
	if err != nil {
		return
	}
	seen := map[string]bool{}
	var paths []string
	for _, p := range strings.Split(string(raw), "\n") {
		if p != "" && filepath.IsAbs(p) && !seen[p] {
			seen[p] = true
			paths = append(paths, p)
		}
	}
	sort.Slice(paths, func(i, j int) bool { return strings.Count(paths[i], "/") > strings.Count(paths[j], "/") })
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if fi.IsDir() || (fi.Mode().IsRegular() && fi.Size() == 0) {
			_ = os.Remove(p) // fails, harmlessly, on a non-empty directory
		}
	}
	_ = os.Remove(logPath)
}

// otherNodeAgents reports whether another `kfaas-cluster node` process runs on this machine.
func otherNodeAgents() bool {
	self := os.Getpid()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil || pid == self {
			continue
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(raw), "\x00")
		if len(args) > 1 && filepath.Base(args[0]) == "kfaas-cluster" && args[1] == "node" {
			return true
		}
	}
	return false
}
