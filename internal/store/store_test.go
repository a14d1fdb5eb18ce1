package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	bolt "go.etcd.io/bbolt"
)

// storeTestWait bounds every wait in these tests: far above what any of them needs, so
// a failure is a bug reported clearly, never a hung test run.
const storeTestWait = 30 * time.Second

// storeImpls are the Store implementations the contract tests run against.
var storeImpls = []struct {
	name string
	open func(t testing.TB) Store
}{
	{"bolt", func(t testing.TB) Store {
		s, err := OpenBolt(filepath.Join(t.TempDir(), "chat.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}},
	{"memory", func(t testing.TB) Store {
		s := NewMem()
		t.Cleanup(func() { s.Close() })
		return s
	}},
}

// kv is one key and value read back from a store, copied out of the callback.
type kv struct{ k, v string }

// collect returns a callback that copies what it is given into *out.
func collect(out *[]kv) func(k, v []byte) error {
	return func(k, v []byte) error {
		*out = append(*out, kv{string(k), string(v)})
		return nil
	}
}

func storeScan(t *testing.T, s Store, bucket string) []kv {
	t.Helper()
	var out []kv
	if err := s.Scan(bucket, collect(&out)); err != nil {
		t.Fatalf("Scan(%q): %v", bucket, err)
	}
	return out
}

func storeLast(t *testing.T, s Store, bucket string, n int) []kv {
	t.Helper()
	var out []kv
	if err := s.Last(bucket, n, collect(&out)); err != nil {
		t.Fatalf("Last(%q, %d): %v", bucket, n, err)
	}
	return out
}

func storeAfter(t *testing.T, s Store, bucket string, after []byte, limit int) []kv {
	t.Helper()
	var out []kv
	if err := s.After(bucket, after, limit, collect(&out)); err != nil {
		t.Fatalf("After(%q, %x, %d): %v", bucket, after, limit, err)
	}
	return out
}

func storeCount(t *testing.T, s Store, bucket string) int {
	t.Helper()
	n, err := s.Count(bucket)
	if err != nil {
		t.Fatalf("Count(%q): %v", bucket, err)
	}
	return n
}

func mustApply(t *testing.T, s Store, batch ...Write) {
	t.Helper()
	if err := s.Apply(batch); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func equalKV(t *testing.T, what string, got, want []kv) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// seqKV is the kv a SeqKey-keyed entry reads back as.
func seqKV(n uint64, v string) kv { return kv{string(SeqKey(n)), v} }

func TestStoreSeqKey(t *testing.T) {
	nums := []uint64{0, 1, 2, 254, 255, 256, 257, 65534, 65535, 65536, 65537, 1<<24 - 1, 1 << 24, 1<<32 - 1, 1 << 32, 1<<63 + 5, 1<<64 - 1}
	for i, n := range nums {
		k := SeqKey(n)
		if len(k) != 8 || KeySeq(k) != n {
			t.Errorf("SeqKey(%d) = %x, KeySeq back = %d", n, k, KeySeq(k))
		}
		if i > 0 && bytes.Compare(SeqKey(nums[i-1]), k) >= 0 {
			t.Errorf("SeqKey(%d) does not sort before SeqKey(%d)", nums[i-1], n)
		}
	}
	for _, bad := range [][]byte{nil, {1}, make([]byte, 7), make([]byte, 9)} {
		if got := KeySeq(bad); got != 0 {
			t.Errorf("KeySeq(%x) = %d, want 0", bad, got)
		}
	}
}

// TestStoreContract runs the Store contract against every implementation, so the
// in-memory store can stand in for bbolt in other tests without hiding differences.
func TestStoreContract(t *testing.T) {
	for _, impl := range storeImpls {
		t.Run(impl.name, func(t *testing.T) {
			t.Run("missing bucket reads empty", func(t *testing.T) {
				s := impl.open(t)
				equalKV(t, "Scan", storeScan(t, s, "nope"), nil)
				equalKV(t, "Last", storeLast(t, s, "nope", 5), nil)
				equalKV(t, "After", storeAfter(t, s, "nope", nil, 5), nil)
				if n := storeCount(t, s, "nope"); n != 0 {
					t.Errorf("Count = %d", n)
				}
				// A delete neither fails nor creates the bucket.
				mustApply(t, s, Write{Bucket: "nope", Key: []byte("k")})
				if n := storeCount(t, s, "nope"); n != 0 {
					t.Errorf("Count after delete = %d", n)
				}
				mustApply(t, s) // an empty batch is a no-op
			})

			t.Run("apply scan count delete", func(t *testing.T) {
				s := impl.open(t)
				mustApply(t, s,
					Write{"b", []byte("c"), []byte("3")},
					Write{"b", []byte("a"), []byte("1")},
					Write{"b", []byte("b"), []byte("2")},
					Write{"b", []byte("e"), []byte{}}, // empty value, still a key
				)
				equalKV(t, "Scan", storeScan(t, s, "b"), []kv{{"a", "1"}, {"b", "2"}, {"c", "3"}, {"e", ""}})
				if n := storeCount(t, s, "b"); n != 4 {
					t.Errorf("Count = %d, want 4", n)
				}
				// Overwrite, delete and set in one batch; later writes to a key win.
				mustApply(t, s,
					Write{"b", []byte("a"), []byte("one")},
					Write{"b", []byte("b"), nil},
					Write{"b", []byte("d"), []byte("x")},
					Write{"b", []byte("d"), nil},
					Write{"b", []byte("f"), nil},
					Write{"b", []byte("f"), []byte("6")},
				)
				equalKV(t, "Scan", storeScan(t, s, "b"), []kv{{"a", "one"}, {"c", "3"}, {"e", ""}, {"f", "6"}})
				if n := storeCount(t, s, "b"); n != 4 {
					t.Errorf("Count = %d, want 4", n)
				}
			})

			t.Run("apply copies its input", func(t *testing.T) {
				s := impl.open(t)
				k, v := []byte("key"), []byte("value")
				mustApply(t, s, Write{"b", k, v})
				k[0], v[0] = 'X', 'X'
				equalKV(t, "Scan", storeScan(t, s, "b"), []kv{{"key", "value"}})
			})

			t.Run("buckets with slashes are separate", func(t *testing.T) {
				s := impl.open(t)
				mustApply(t, s,
					Write{"history", []byte("k"), []byte("plain")},
					Write{"history/lobby", []byte("k"), []byte("lobby")},
					Write{"history/lobby/x", []byte("k"), []byte("deeper")},
					Write{"history/lobby2", []byte("k"), []byte("other")},
				)
				for b, v := range map[string]string{"history": "plain", "history/lobby": "lobby", "history/lobby/x": "deeper", "history/lobby2": "other"} {
					equalKV(t, "Scan "+b, storeScan(t, s, b), []kv{{"k", v}})
				}
				equalKV(t, "Scan history/", storeScan(t, s, "history/"), nil)
			})

			t.Run("sequence keys sort numerically", func(t *testing.T) {
				s := impl.open(t)
				var nums []uint64
				for n := uint64(1); n <= 300; n++ {
					nums = append(nums, n)
				}
				for n := uint64(65530); n <= 65540; n++ {
					nums = append(nums, n)
				}
				nums = append(nums, 1<<24, 1<<32+1)
				shuffled := slices.Clone(nums)
				rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
				var batch []Write
				for _, n := range shuffled {
					batch = append(batch, Write{"history/lobby", SeqKey(n), []byte(strconv.FormatUint(n, 10))})
				}
				mustApply(t, s, batch...)
				var want []kv
				for _, n := range nums {
					want = append(want, seqKV(n, strconv.FormatUint(n, 10)))
				}
				equalKV(t, "Scan", storeScan(t, s, "history/lobby"), want)
				if n := storeCount(t, s, "history/lobby"); n != len(nums) {
					t.Errorf("Count = %d, want %d", n, len(nums))
				}

				equalKV(t, "Last 3", storeLast(t, s, "history/lobby", 3), want[len(want)-3:])
				equalKV(t, "Last 1", storeLast(t, s, "history/lobby", 1), want[len(want)-1:])
				equalKV(t, "Last all", storeLast(t, s, "history/lobby", len(want)), want)
				equalKV(t, "Last more", storeLast(t, s, "history/lobby", len(want)+10), want)
				equalKV(t, "Last 0", storeLast(t, s, "history/lobby", 0), nil)
				equalKV(t, "Last -1", storeLast(t, s, "history/lobby", -1), nil)

				equalKV(t, "After nil", storeAfter(t, s, "history/lobby", nil, 2), want[:2])
				equalKV(t, "After 255", storeAfter(t, s, "history/lobby", SeqKey(255), 3), want[255:258])
				equalKV(t, "After 65535", storeAfter(t, s, "history/lobby", SeqKey(65535), 100), want[306:])
				// A key that is not there: start at the next one.
				equalKV(t, "After 1000", storeAfter(t, s, "history/lobby", SeqKey(1000), 2), want[300:302])
				equalKV(t, "After last", storeAfter(t, s, "history/lobby", SeqKey(1<<32+1), 5), nil)
				equalKV(t, "After beyond", storeAfter(t, s, "history/lobby", SeqKey(1<<40), 5), nil)
				equalKV(t, "After limit 0", storeAfter(t, s, "history/lobby", nil, 0), nil)
				equalKV(t, "After all", storeAfter(t, s, "history/lobby", SeqKey(0), 1000), want)
			})

			t.Run("last on a tiny bucket", func(t *testing.T) {
				s := impl.open(t)
				mustApply(t, s, Write{"b", []byte("only"), []byte("1")})
				equalKV(t, "Last 1", storeLast(t, s, "b", 1), []kv{{"only", "1"}})
				equalKV(t, "Last 5", storeLast(t, s, "b", 5), []kv{{"only", "1"}})
				mustApply(t, s, Write{"b", []byte("only"), nil})
				equalKV(t, "Last after delete", storeLast(t, s, "b", 5), nil)
			})

			t.Run("invalid writes refuse the whole batch", func(t *testing.T) {
				s := impl.open(t)
				for name, bad := range map[string]struct {
					w    Write
					want error
				}{
					"empty key":      {Write{"b", nil, []byte("v")}, ErrKey},
					"empty key del":  {Write{"b", []byte{}, nil}, ErrKey},
					"long key":       {Write{"b", make([]byte, MaxKey+1), []byte("v")}, ErrKey},
					"empty bucket":   {Write{"", []byte("k"), []byte("v")}, ErrBucket},
					"long bucket":    {Write{strings.Repeat("b", MaxKey+1), []byte("k"), []byte("v")}, ErrBucket},
					"empty bucket 2": {Write{"", []byte("k"), nil}, ErrBucket},
				} {
					err := s.Apply([]Write{{"b", []byte("good"), []byte("v")}, bad.w, {"c", []byte("good"), []byte("v")}})
					if !errors.Is(err, bad.want) {
						t.Errorf("%s: Apply = %v, want %v", name, err, bad.want)
					}
				}
				if n := storeCount(t, s, "b") + storeCount(t, s, "c"); n != 0 {
					t.Errorf("a refused batch wrote %d keys", n)
				}
			})

			t.Run("callback errors stop the read", func(t *testing.T) {
				s := impl.open(t)
				mustApply(t, s, Write{"b", []byte("1"), []byte("a")}, Write{"b", []byte("2"), []byte("b")}, Write{"b", []byte("3"), []byte("c")})
				stop := errors.New("stop")
				for name, read := range map[string]func(fn func(k, v []byte) error) error{
					"Scan":  func(fn func(k, v []byte) error) error { return s.Scan("b", fn) },
					"Last":  func(fn func(k, v []byte) error) error { return s.Last("b", 3, fn) },
					"After": func(fn func(k, v []byte) error) error { return s.After("b", nil, 3, fn) },
				} {
					calls := 0
					err := read(func(k, v []byte) error { calls++; return stop })
					if err != stop || calls != 1 {
						t.Errorf("%s: err %v after %d calls, want stop after 1", name, err, calls)
					}
				}
			})

			t.Run("closed store refuses", func(t *testing.T) {
				s := impl.open(t)
				mustApply(t, s, Write{"b", []byte("k"), []byte("v")})
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				nop := func(k, v []byte) error { return nil }
				if err := s.Apply([]Write{{"b", []byte("k"), []byte("v")}}); err == nil {
					t.Error("Apply after Close succeeded")
				}
				if err := s.Scan("b", nop); err == nil {
					t.Error("Scan after Close succeeded")
				}
				if _, err := s.Count("b"); err == nil {
					t.Error("Count after Close succeeded")
				}
			})
		})
	}
}

// TestStoreModel applies the same random batches to both implementations and compares
// every read: the in-memory store must be a faithful stand-in for bbolt.
func TestStoreModel(t *testing.T) {
	bolt, mem := storeImpls[0].open(t), storeImpls[1].open(t)
	r := rand.New(rand.NewPCG(7, 11))
	buckets := []string{"a", "a/b", "history/lobby"}
	for round := range 200 {
		var batch []Write
		for range 1 + r.IntN(20) {
			w := Write{Bucket: buckets[r.IntN(len(buckets))], Key: SeqKey(uint64(r.IntN(600)))}
			if r.IntN(4) > 0 {
				w.Value = fmt.Appendf(nil, "v%d-%d", round, r.IntN(1000))
			}
			batch = append(batch, w)
		}
		mustApply(t, bolt, batch...)
		mustApply(t, mem, batch...)
		b := buckets[r.IntN(len(buckets))]
		n, at := r.IntN(40), SeqKey(uint64(r.IntN(600)))
		equalKV(t, "Scan", storeScan(t, mem, b), storeScan(t, bolt, b))
		equalKV(t, "Last", storeLast(t, mem, b, n), storeLast(t, bolt, b, n))
		equalKV(t, "After", storeAfter(t, mem, b, at, n), storeAfter(t, bolt, b, at, n))
		if cm, cb := storeCount(t, mem, b), storeCount(t, bolt, b); cm != cb {
			t.Fatalf("round %d: Count mem %d bolt %d", round, cm, cb)
		}
		if t.Failed() {
			t.Fatalf("round %d differs", round)
		}
	}
}

func TestStoreBoltReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chat.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	var batch []Write
	var want []kv
	for i := uint64(1); i <= 1000; i++ {
		v := fmt.Sprintf("message %d", i)
		batch = append(batch, Write{"history/lobby", SeqKey(i), []byte(v)})
		want = append(want, seqKV(i, v))
	}
	mustApply(t, s, batch...)
	mustApply(t, s, Write{"rooms", []byte("lobby"), []byte(`{"private":false}`)})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("data file mode %o, want 600", perm)
	}

	s, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	equalKV(t, "history", storeScan(t, s, "history/lobby"), want)
	equalKV(t, "rooms", storeScan(t, s, "rooms"), []kv{{"lobby", `{"private":false}`}})
}

// TestStoreBoltLocked: a second server on the same data file fails within the lock
// timeout with ErrLocked instead of hanging or sharing the file.
func TestStoreBoltLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chat.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res := make(chan error, 1)
	go func() {
		s2, err := OpenBolt(path)
		if err == nil {
			s2.Close()
		}
		res <- err
	}()
	select {
	case err := <-res:
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second open: %v, want ErrLocked", err)
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name the file", err)
		}
	case <-time.After(lockTimeout + storeTestWait):
		t.Fatal("second open hung")
	}
	// The first store is unharmed.
	mustApply(t, s, Write{"b", []byte("k"), []byte("v")})
}

// testStore wraps a Store to watch and steer a Writer: it counts Apply calls, can
// hold the first one until released, and fails any Apply holding a poisoned key.
type testStore struct {
	Store
	applies atomic.Int64
	// entered receives once when the first Apply starts; that Apply then waits for gate.
	entered chan struct{}
	gate    chan struct{}
	poison  string
}

func newTestStore(gated bool, poison string) *testStore {
	s := &testStore{Store: NewMem(), poison: poison}
	if gated {
		s.entered, s.gate = make(chan struct{}, 1), make(chan struct{})
	}
	return s
}

var errPoison = errors.New("poisoned key")

func (s *testStore) Apply(batch []Write) error {
	if s.applies.Add(1) == 1 && s.gate != nil {
		s.entered <- struct{}{}
		<-s.gate
	}
	for _, w := range batch {
		if s.poison != "" && string(w.Key) == s.poison {
			return errPoison
		}
	}
	return s.Store.Apply(batch)
}

// storeRecv receives from ch or fails the test after storeTestWait.
func storeRecv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(storeTestWait):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// TestStoreWriterConcurrent: many submitters, each gets done(nil) exactly once per
// Submit, in its own submission order, and every write lands.
func TestStoreWriterConcurrent(t *testing.T) {
	const submitters, each = 8, 300
	s := NewMem()
	var commits atomic.Int64
	w := NewWriter(s, submitters*each, 0, func(c Commit) {
		commits.Add(1)
		if c.Err != nil {
			t.Errorf("commit failed: %v", c.Err)
		}
	})
	got := make([][]int, submitters) // got[g] is written only by the writer goroutine
	var calls sync.WaitGroup
	calls.Add(submitters * each)
	var start sync.WaitGroup
	start.Add(submitters)
	for g := range submitters {
		go func() {
			start.Done()
			start.Wait()
			for i := range each {
				ok := w.Submit([]Write{{fmt.Sprintf("g%d", g), SeqKey(uint64(i + 1)), []byte(strconv.Itoa(i))}}, func(err error) {
					if err != nil {
						t.Errorf("submitter %d write %d: %v", g, i, err)
					}
					got[g] = append(got[g], i)
					calls.Done()
				})
				if !ok {
					t.Errorf("Submit refused with a queue big enough for everything")
					calls.Done()
				}
			}
		}()
	}
	all := make(chan struct{})
	go func() { calls.Wait(); close(all) }()
	storeRecv(t, all, "every callback")
	w.Close()
	for g := range submitters {
		want := make([]int, each)
		for i := range want {
			want[i] = i
		}
		if !slices.Equal(got[g], want) {
			t.Errorf("submitter %d: callbacks %v, want 0..%d once each in order", g, got[g], each-1)
		}
		if n := storeCount(t, s, fmt.Sprintf("g%d", g)); n != each {
			t.Errorf("submitter %d: %d keys stored, want %d", g, n, each)
		}
	}
	t.Logf("%d submits in %d commits", submitters*each, commits.Load())
}

// TestStoreWriterBatches: requests queued while a commit is in flight go out together
// in one Apply, in submission order, with the later write to a key winning.
func TestStoreWriterBatches(t *testing.T) {
	const n = 200
	s := newTestStore(true, "")
	var observed []Commit
	w := NewWriter(s, n+1, 0, func(c Commit) { observed = append(observed, c) })
	done := make(chan int, n+1)
	if !w.Submit([]Write{{"b", []byte("first"), []byte("1")}}, func(err error) { done <- -1 }) {
		t.Fatal("Submit refused")
	}
	storeRecv(t, s.entered, "the first Apply")
	for i := range n {
		// Every request also overwrites "last", so the final value shows the order.
		writes := []Write{{"b", SeqKey(uint64(i)), []byte("x")}, {"b", []byte("last"), []byte(strconv.Itoa(i))}}
		if !w.Submit(writes, func(err error) {
			if err != nil {
				t.Errorf("request %d: %v", i, err)
			}
			done <- i
		}) {
			t.Fatal("Submit refused")
		}
	}
	close(s.gate)
	storeRecv(t, done, "first callback")
	for i := range n {
		if got := storeRecv(t, done, "callbacks"); got != i {
			t.Fatalf("callback %d came as number %d", got, i)
		}
	}
	w.Close()
	if a := s.applies.Load(); a != 2 {
		t.Errorf("%d submits took %d Apply calls, want 2 (the held one and one batch)", n+1, a)
	}
	if len(observed) != 2 || observed[1].Requests != n || observed[1].Writes != 2*n {
		t.Errorf("observed commits %+v", observed)
	}
	var last []kv
	for _, e := range storeScan(t, s, "b") {
		if e.k == "last" {
			last = append(last, e)
		}
	}
	equalKV(t, "last", last, []kv{{"last", strconv.Itoa(n - 1)}})
	if c := storeCount(t, s, "b"); c != n+2 {
		t.Errorf("%d keys stored, want %d", c, n+2)
	}
}

// TestStoreWriterBatchBound: a batch stops at batchMaxRequests, so one commit
// never holds more than the bound however deep the queue is.
func TestStoreWriterBatchBound(t *testing.T) {
	n := batchMaxRequests*2 + 10
	s := newTestStore(true, "")
	var maxReq atomic.Int64
	w := NewWriter(s, n+1, 0, func(c Commit) {
		if int64(c.Requests) > maxReq.Load() {
			maxReq.Store(int64(c.Requests))
		}
	})
	w.Submit(nil, nil)
	storeRecv(t, s.entered, "the first Apply")
	for i := range n {
		if !w.Submit([]Write{{"b", SeqKey(uint64(i)), []byte("v")}}, nil) {
			t.Fatal("Submit refused")
		}
	}
	close(s.gate)
	w.Close()
	if m := maxReq.Load(); m != batchMaxRequests {
		t.Errorf("largest batch %d requests, want %d", m, batchMaxRequests)
	}
	if a := s.applies.Load(); a != 4 {
		t.Errorf("%d Apply calls, want 4 (held, 512, 512, 10)", a)
	}
	if c := storeCount(t, s, "b"); c != n {
		t.Errorf("%d keys stored, want %d", c, n)
	}
}

// TestStoreWriterQueueFull: with the disk stuck, Submit refuses once the queue is
// full instead of blocking the hub.
func TestStoreWriterQueueFull(t *testing.T) {
	s := newTestStore(true, "")
	w := NewWriter(s, 2, 0)
	var called atomic.Int64
	count := func(error) { called.Add(1) }
	if !w.Submit([]Write{{"b", []byte("1"), []byte("v")}}, count) {
		t.Fatal("first Submit refused")
	}
	storeRecv(t, s.entered, "the first Apply") // the writer holds it, the queue is empty
	if !w.Submit([]Write{{"b", []byte("2"), []byte("v")}}, count) || !w.Submit([]Write{{"b", []byte("3"), []byte("v")}}, count) {
		t.Fatal("Submit refused with room in the queue")
	}
	if w.Submit([]Write{{"b", []byte("4"), []byte("v")}}, count) {
		t.Fatal("Submit accepted past a full queue")
	}
	if q := w.Queued(); q != 2 {
		t.Errorf("Queued = %d, want 2", q)
	}
	close(s.gate)
	w.Close()
	if c := called.Load(); c != 3 {
		t.Errorf("%d callbacks, want 3 (the refused Submit gets none)", c)
	}
	equalKV(t, "stored", storeScan(t, s, "b"), []kv{{"1", "v"}, {"2", "v"}, {"3", "v"}})
}

// TestStoreWriterCloseFlushes: Close commits everything queued and calls every
// callback before it returns; Submit after Close is refused.
func TestStoreWriterCloseFlushes(t *testing.T) {
	const n = 50
	s := newTestStore(true, "")
	w := NewWriter(s, n, 0)
	var called atomic.Int64
	for i := range n {
		if !w.Submit([]Write{{"b", SeqKey(uint64(i)), []byte("v")}}, func(err error) {
			if err != nil {
				t.Error(err)
			}
			called.Add(1)
		}) {
			t.Fatal("Submit refused")
		}
		if i == 0 {
			storeRecv(t, s.entered, "the first Apply")
		}
	}
	closed := make(chan struct{})
	go func() { w.Close(); close(closed) }()
	// Close must wait for the commit in flight; the writer is stuck until the gate opens.
	select {
	case <-closed:
		t.Fatal("Close returned while a commit was in flight")
	default:
	}
	close(s.gate)
	storeRecv(t, closed, "Close")
	if c := called.Load(); c != n {
		t.Errorf("%d callbacks before Close returned, want %d", c, n)
	}
	if c := storeCount(t, s, "b"); c != n {
		t.Errorf("%d keys stored, want %d", c, n)
	}
	if w.Submit([]Write{{"b", []byte("late"), []byte("v")}}, func(error) { t.Error("callback for a refused Submit") }) {
		t.Error("Submit after Close accepted")
	}
	w.Close() // twice is fine
}

// TestStoreWriterRetriesAlone: when a combined commit fails, each request is retried
// on its own and only the bad one gets the error.
func TestStoreWriterRetriesAlone(t *testing.T) {
	s := newTestStore(true, "bad")
	var retries atomic.Int64
	w := NewWriter(s, 10, 0, func(c Commit) {
		if c.Retry {
			retries.Add(1)
		}
	})
	results := make(chan string, 10)
	submit := func(name string, writes ...Write) {
		t.Helper()
		if !w.Submit(writes, func(err error) { results <- fmt.Sprintf("%s:%v", name, err) }) {
			t.Fatal("Submit refused")
		}
	}
	submit("held", Write{"b", []byte("held"), []byte("v")})
	storeRecv(t, s.entered, "the first Apply")
	submit("a", Write{"b", []byte("a"), []byte("v")})
	submit("bad", Write{"b", []byte("b"), []byte("v")}, Write{"b", []byte("bad"), []byte("v")})
	submit("invalid", Write{"b", nil, []byte("v")})
	submit("c", Write{"b", []byte("c"), []byte("v")})
	close(s.gate)
	var got []string
	for range 5 {
		got = append(got, storeRecv(t, results, "results"))
	}
	w.Close()
	want := []string{"held:<nil>", "a:<nil>", "bad:" + errPoison.Error(), "invalid:" + fmt.Sprintf("write 0 (bucket %q): %v", "b", ErrKey), "c:<nil>"}
	if !slices.Equal(got, want) {
		t.Errorf("results\n got %q\nwant %q", got, want)
	}
	if r := retries.Load(); r != 4 {
		t.Errorf("%d retries, want 4", r)
	}
	// Nothing of the bad request was written, everything of the others was.
	equalKV(t, "stored", storeScan(t, s, "b"), []kv{{"a", "v"}, {"c", "v"}, {"held", "v"}})
}

// storeCrashEnv tells a re-executed test binary to act as the crash child, and where
// its data file is.
const storeCrashEnv = "CHAT_STORE_CRASH_DB"

// storeCrashValue is the value the crash child writes under SeqKey(i); the parent
// checks it byte for byte. Its length varies so pages split at different places.
func storeCrashValue(i uint64) []byte {
	return []byte(strings.Repeat(fmt.Sprintf("value %d;", i), 1+int(i%13)))
}

// TestStoreCrashChild is not a test on its own: TestStoreCrash runs the test binary
// again with this test selected and storeCrashEnv set, and kills it with SIGKILL
// mid-write. It writes through a Writer, carrying on after the last key a previous
// child left, and prints "acked i" once write i is durable.
func TestStoreCrashChild(t *testing.T) {
	path := os.Getenv(storeCrashEnv)
	if path == "" {
		t.Skip("run by TestStoreCrash")
	}
	// Whatever happens, never outlive the parent's interest.
	time.AfterFunc(storeTestWait, func() { os.Exit(3) })
	fail := func(what string, err error) {
		fmt.Printf("%s: %v\n", what, err)
		os.Exit(2)
	}
	s, err := OpenBolt(path)
	if err != nil {
		fail("open", err)
	}
	next := uint64(1)
	if err := s.Last("history/lobby", 1, func(k, v []byte) error { next = KeySeq(k) + 1; return nil }); err != nil {
		fail("last", err)
	}
	w := NewWriter(s, 0, 0)
	// Tokens bound the writes in flight, so the child waits on the disk, not in a spin.
	tokens := make(chan struct{}, 64)
	for i := next; ; i++ {
		tokens <- struct{}{}
		ok := w.Submit([]Write{{"history/lobby", SeqKey(i), storeCrashValue(i)}}, func(err error) {
			if err != nil {
				fail("commit", err)
			}
			// One unbuffered write per line: a line is whole in the pipe or absent.
			fmt.Printf("acked %d\n", i)
			<-tokens
		})
		if !ok {
			fail("submit", errors.New("queue full"))
		}
	}
}

// TestStoreCrash kills a process writing through Writer with SIGKILL, three times
// on the same file, and checks each time that the file opens cleanly, passes bbolt's
// consistency check and holds every write that was acknowledged, byte for byte.
func TestStoreCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chat.db")
	acked := map[uint64]bool{}
	for round := 1; round <= 3; round++ {
		n := storeCrashRound(t, path, acked)
		s, err := OpenBolt(path)
		if err != nil {
			t.Fatalf("round %d: reopening after kill -9: %v", round, err)
		}
		if err := s.db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				t.Errorf("round %d: bbolt check: %v", round, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		stored := map[uint64][]byte{}
		if err := s.Scan("history/lobby", func(k, v []byte) error {
			stored[KeySeq(k)] = bytes.Clone(v)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		for i := range acked {
			if v, ok := stored[i]; !ok {
				t.Errorf("round %d: acked write %d is missing", round, i)
			} else if !bytes.Equal(v, storeCrashValue(i)) {
				t.Errorf("round %d: acked write %d reads back %q", round, i, v)
			}
		}
		// Writes that were durable but not yet acked may be there too, always whole.
		for i, v := range stored {
			if !bytes.Equal(v, storeCrashValue(i)) {
				t.Errorf("round %d: write %d reads back %q", round, i, v)
			}
		}
		t.Logf("round %d: %d acked this round, %d acked in all, %d stored after SIGKILL", round, n, len(acked), len(stored))
		if t.Failed() {
			return
		}
	}
}

// storeCrashRound runs one crash child on path until it has acknowledged 200 writes,
// kills it with SIGKILL, adds every ack it printed to acked and returns how many.
func storeCrashRound(t *testing.T, path string, acked map[uint64]bool) int {
	const wantAcks = 200
	ctx, cancel := context.WithTimeout(context.Background(), storeTestWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestStoreCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), storeCrashEnv+"="+path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	// The reader sends every ack on acks until the pipe closes; the child's other
	// lines are kept to explain a failure.
	acks := make(chan uint64, 1024)
	var other []string
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(acks)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
				if i, err := strconv.ParseUint(n, 10, 64); err == nil {
					acks <- i
					continue
				}
			}
			other = append(other, sc.Text())
		}
	}()

	n := 0
	for n < wantAcks {
		select {
		case i, ok := <-acks:
			if !ok {
				<-readDone
				cmd.Wait()
				t.Fatalf("child ended after %d acks: %q", n, other)
			}
			acked[i] = true
			n++
		case <-ctx.Done():
			t.Fatalf("only %d acks before the deadline", n)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Acks already in the pipe were durable before the kill: they count too.
	for i := range acks {
		acked[i] = true
		n++
	}
	<-readDone
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed by SIGKILL: %v (output %q)", err, other)
	}
	return n
}

// BenchmarkStoreWriter measures durable writes per second on a real bbolt file, from
// many concurrent submitters each waiting for its write to be durable (as a chat
// message waits for its ack): through Writer, which batches, against one Apply
// (one fsync) per write.
func BenchmarkStoreWriter(b *testing.B) {
	value := bytes.Repeat([]byte("x"), 200)
	var seq atomic.Uint64
	report := func(b *testing.B, commits int64) {
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
		b.ReportMetric(float64(commits)/b.Elapsed().Seconds(), "commits/s")
		b.ReportMetric(float64(b.N)/float64(max(commits, 1)), "writes/commit")
	}
	b.Run("batched", func(b *testing.B) {
		s := storeImpls[0].open(b)
		var commits atomic.Int64
		w := NewWriter(s, 0, 0, func(Commit) { commits.Add(1) })
		b.SetParallelism(32)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			done := make(chan error, 1)
			for pb.Next() {
				if !w.Submit([]Write{{"history/lobby", SeqKey(seq.Add(1)), value}}, func(err error) { done <- err }) {
					b.Error("Submit refused")
					return
				}
				if err := <-done; err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		w.Close()
		report(b, commits.Load())
	})
	b.Run("apply-each", func(b *testing.B) {
		s := storeImpls[0].open(b)
		var commits atomic.Int64
		b.SetParallelism(32)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := s.Apply([]Write{{"history/lobby", SeqKey(seq.Add(1)), value}}); err != nil {
					b.Error(err)
					return
				}
				commits.Add(1)
			}
		})
		b.StopTimer()
		report(b, commits.Load())
	})
}

// TestStoreWriterLinger: with a linger, requests arriving shortly after one another
// share one commit (one fsync) instead of paying one each, and the commit comes when
// the linger ends, not before; without one, a lone request is committed at once. The
// clock is synctest's: the linger passes without the test waiting for it.
func TestStoreWriterLinger(t *testing.T) {
	const linger = 300 * time.Millisecond
	synctest.Test(t, func(t *testing.T) {
		s := newTestStore(false, "")
		var commits atomic.Int64
		w := NewWriter(s, 0, linger, func(Commit) { commits.Add(1) })
		defer w.Close()
		done := make(chan error, 3)
		start := time.Now()
		for i := range 3 {
			if !w.Submit([]Write{{"b", SeqKey(uint64(i)), []byte("x")}}, func(err error) { done <- err }) {
				t.Fatal("Submit refused")
			}
			time.Sleep(20 * time.Millisecond) // the bubble's clock: no real wait
		}
		synctest.Wait()
		if n := commits.Load(); n != 0 {
			t.Fatalf("%d commits before the linger ended, want 0", n)
		}
		for range 3 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		if took := time.Since(start); took != linger {
			t.Errorf("the batch was committed after %v, want the linger %v", took, linger)
		}
		if got := commits.Load(); got != 1 {
			t.Errorf("3 requests within the linger took %d commits, want 1", got)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		s := newTestStore(false, "")
		var commits atomic.Int64
		w := NewWriter(s, 0, 0, func(Commit) { commits.Add(1) })
		defer w.Close()
		start := time.Now()
		for i := range 3 {
			done := make(chan error, 1)
			if !w.Submit([]Write{{"b", SeqKey(uint64(i)), []byte("x")}}, func(err error) { done <- err }) {
				t.Fatal("Submit refused")
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		if took := time.Since(start); took != 0 {
			t.Errorf("without a linger commits waited %v", took)
		}
		if got := commits.Load(); got != 3 {
			t.Errorf("without a linger 3 requests took %d commits, want 3", got)
		}
	})
}
