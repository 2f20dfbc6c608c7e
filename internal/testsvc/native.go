package testsvc

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// nativeDemoC is the native program the perf tests record: one thread
// burning CPU in burn_cpu, one sleeping 20 ms at a time in sleep_forever.
// (With frame-pointer unwinding the function that calls into libc's
// frameless clock_nanosleep is skipped, so the sleep goes through do_nap
// and sleep_forever is the frame that shows; docs/perf.md, known issues.)
// With an argument N the program exits after N seconds.
const nativeDemoC = `
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
volatile uint64_t sink;
__attribute__((noinline)) void burn_cpu(void) {
	uint64_t a = 1;
	for (long i = 0; i < 50000000; i++) a = a * 6364136223846793005ull + (uint64_t)i;
	sink += a;
}
__attribute__((noinline)) void do_nap(void) {
	struct timespec ts = {0, 20000000L};
	nanosleep(&ts, 0);
}
__attribute__((noinline)) void sleep_forever(void) { for (;;) do_nap(); }
void *burner(void *arg) { pthread_setname_np(pthread_self(), "burner"); for (;;) burn_cpu(); return 0; }
void *sleeper(void *arg) { pthread_setname_np(pthread_self(), "sleeper"); sleep_forever(); return 0; }
int main(int argc, char **argv) {
	pthread_t a, b;
	pthread_create(&a, 0, burner, 0);
	pthread_create(&b, 0, sleeper, 0);
	if (argc > 1) {
		double s = atof(argv[1]);
		struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
		nanosleep(&ts, 0);
		return 0;
	}
	pthread_join(a, 0);
	return 0;
}
`

// BuildNative compiles the native demo program with gcc (frame pointers and
// symbols, or stripped) into a temporary directory and returns its path.
// With an argument N the program exits after N seconds.
func BuildNative(t testing.TB, strip bool) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "perfdemo.c")
	if err := os.WriteFile(src, []byte(nativeDemoC), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "perfdemo")
	args := []string{"-O1", "-fno-omit-frame-pointer", "-g", "-pthread", "-o", bin, src}
	if strip {
		bin += "-stripped"
		args = []string{"-O1", "-fno-omit-frame-pointer", "-s", "-pthread", "-o", bin, src}
	}
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}
