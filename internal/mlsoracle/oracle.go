// Package mlsoracle drives third_party/ts-mls/oracle.mjs, an MLS client made of the
// vendored ts-mls 1.6.4, from Go tests: the hub's Delivery Service is then tested
// against the real library, end to end, without a browser. Only tests import it.
package mlsoracle

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// callTimeout bounds one request: ts-mls answers in milliseconds on small groups, so
// a stuck oracle fails the test instead of hanging the suite.
const callTimeout = 30 * time.Second

// Oracle is one running node process holding any number of named MLS clients.
type Oracle struct {
	t   testing.TB
	in  io.WriteCloser
	out *bufio.Scanner
	cmd *exec.Cmd
}

// Start runs the oracle for the test's duration; it is stopped (stdin closed, process
// waited for) in the test's cleanup. Without node the test is skipped, and says so.
func Start(t testing.TB) *Oracle {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the ts-mls oracle cannot run")
	}
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "third_party", "ts-mls", "oracle.mjs")
	cmd := exec.Command(node, script)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o := &Oracle{t: t, in: in, cmd: cmd, out: bufio.NewScanner(out)}
	o.out.Buffer(make([]byte, 0, 1<<16), 16<<20)
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(callTimeout):
			cmd.Process.Kill()
			<-done
		}
	})
	return o
}

// Result is one answer: ok, error, and the op's fields.
type Result map[string]any

// Str returns a string field ("" when absent).
func (r Result) Str(k string) string { s, _ := r[k].(string); return s }

// Bytes returns a base64 field decoded.
func (r Result) Bytes(k string) []byte {
	b, _ := base64.StdEncoding.DecodeString(r.Str(k))
	return b
}

// Err returns the oracle's error text, "" when the op succeeded.
func (r Result) Err() string {
	if ok, _ := r["ok"].(bool); ok {
		return ""
	}
	if e := r.Str("error"); e != "" {
		return e
	}
	return "failed"
}

// Try sends one request and returns its answer, failed or not.
func (o *Oracle) Try(req map[string]any) Result {
	o.t.Helper()
	line, err := json.Marshal(req)
	if err != nil {
		o.t.Fatal(err)
	}
	if _, err := o.in.Write(append(line, '\n')); err != nil {
		o.t.Fatalf("oracle: %v", err)
	}
	got := make(chan bool, 1)
	go func() { got <- o.out.Scan() }()
	select {
	case ok := <-got:
		if !ok {
			o.t.Fatalf("oracle ended: %v", o.out.Err())
		}
	case <-time.After(callTimeout):
		o.cmd.Process.Kill()
		<-got
		o.t.Fatalf("oracle: no answer to %s", req["op"])
	}
	var r Result
	if err := json.Unmarshal(o.out.Bytes(), &r); err != nil {
		o.t.Fatalf("oracle: %v", err)
	}
	return r
}

// Do sends one request that must succeed.
func (o *Oracle) Do(req map[string]any) Result {
	o.t.Helper()
	r := o.Try(req)
	if e := r.Err(); e != "" {
		o.t.Fatalf("oracle %s %v: %s", req["op"], req["id"], e)
	}
	return r
}

// B64 encodes bytes for a request.
func B64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
