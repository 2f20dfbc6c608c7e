package symbolize

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMappingsReleased: a Symbolizer's file mappings go when nothing points
// into them any more (a long-running collector makes one per capture).
func TestMappingsReleased(t *testing.T) {
	libc := findLibc(t)
	count := func() int {
		b, _ := os.ReadFile("/proc/self/maps")
		return strings.Count(string(b), libc)
	}
	before := count()
	for i := 0; i < 20; i++ {
		s := New(Options{NoLines: true, BuildIDCache: "-"})
		s.File(libc, "", "").LookupVaddr(0x30000)
	}
	for i := 0; i < 5; i++ {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
	if after := count(); after > before+2 {
		t.Errorf("%s mapped %d times after 20 symbolizers, %d before", libc, after, before)
	}
}
