// Command tlscgo is a cgo program whose C side has a large __thread array, so the program is
// linked externally and Go's g is no longer at the usual TLS slot (fs:-8). Hooks that read g
// from a fixed TLS offset corrupt such programs; tether's must not.
//
//	tlscgo    writes and reads a file, makes a raw getppid through syscall.Syscall, and
//	          checks the C thread-local array was not disturbed
package main

/*
__thread char tls_blob[4096];
static void tls_fill(void) { for (int i = 0; i < 4096; i++) tls_blob[i] = (char)(i * 7); }
static int tls_check(void) { for (int i = 0; i < 4096; i++) if (tls_blob[i] != (char)(i * 7)) return 0; return 1; }
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
)

func main() {
	runtime.LockOSThread() // the thread-local array belongs to this thread
	C.tls_fill()
	dir, err := os.MkdirTemp("", "tlscgo")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "f")
	for i := 0; i < 100; i++ {
		if err := os.WriteFile(path, []byte("tls"), 0o600); err != nil {
			panic(err)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "tls" {
			panic(fmt.Sprint("read back ", string(b), err))
		}
	}
	ppid, _, _ := syscall.Syscall(syscall.SYS_GETPPID, 0, 0, 0)
	fmt.Println("getppid", ppid, "tls intact", C.tls_check() == 1)
}
