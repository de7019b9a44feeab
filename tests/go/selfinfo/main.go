// selfinfo prints what a program can see of how it was started, so that a test can compare a
// run under tether with a run without: its executable, arguments, environment, the auxiliary
// vector's stable entries. Then, with "exit N", it ends with status N; with "run PROGRAM
// ARGS...", it runs PROGRAM as a child (os/exec) and ends with its status.
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
)

// Entries whose values differ from run to run (addresses chosen by ASLR).
var randomized = map[uint64]bool{
	15: true, // AT_PLATFORM (a pointer)
	24: true, // AT_BASE_PLATFORM
	25: true, // AT_RANDOM
	31: true, // AT_EXECFN
	33: true, // AT_SYSINFO_EHDR (the vDSO)
}

func main() {
	exe, err := os.Readlink("/proc/self/exe")
	check(err)
	fmt.Printf("exe %s\n", exe)
	fmt.Printf("args %q\n", os.Args)
	env := os.Environ()
	sort.Strings(env)
	for _, kv := range env {
		fmt.Printf("env %s\n", kv)
	}
	auxv, err := os.ReadFile("/proc/self/auxv")
	check(err)
	for i := 0; i+16 <= len(auxv); i += 16 {
		key, value := binary.LittleEndian.Uint64(auxv[i:]), binary.LittleEndian.Uint64(auxv[i+8:])
		if randomized[key] {
			value = 0
		}
		fmt.Printf("auxv %d %#x\n", key, value)
	}
	if len(os.Args) == 3 && os.Args[1] == "exit" {
		code, err := strconv.Atoi(os.Args[2])
		check(err)
		os.Exit(code)
	}
	if len(os.Args) >= 3 && os.Args[1] == "run" {
		child := exec.Command(os.Args[2], os.Args[3:]...)
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		err := child.Run()
		if child.ProcessState == nil {
			check(err) // it did not start
		}
		os.Exit(child.ProcessState.ExitCode())
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "selfinfo:", err)
		os.Exit(1)
	}
}
