package cluster

import (
	"bytes"
	"cmp"
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// The MLS KeyPackage directory in cluster mode (issues 13 and 14). A node's own
// directory would let a device that uploaded on node 1 never be added by node 2, and
// two nodes could hand out one KeyPackage twice, which MLS forbids. Here each device's
// KeyPackages and the refs it has used live in Redis under its user's hash tag, and one
// script per operation (lua/kp.lua) checks and changes them atomically: an upload is
// refused whole or stored whole, and a take pops an entry for exactly one caller
// whichever node asks. Each entry is sealed with the cluster key for its device's key,
// so an entry written by hand, or moved to another device, is never handed out: it is
// dropped and counted as forged (Dropped).

// KeyPackage directory tunables.
const (
	// kpTimeout bounds one upload, count, or one round of a take.
	kpTimeout = 2 * time.Second
	// kpGrace keeps a used ref this long past its NotAfter, since the nodes' clocks
	// differ by a few minutes (the hub accepts lifetimes with 5 minutes' slack); each
	// key also expires that long after its last NotAfter, so the keys of a device
	// nobody uses any more vanish by themselves.
	kpGrace = time.Hour
	// kpSkipMax bounds the entries one take drops in the script (copies of used ones,
	// entries without a ref), so a rogue writer cannot make one call run long.
	kpSkipMax = 64
	// kpTakeRounds bounds the rounds of one Take: each entry whose seal fails costs its
	// device another round trip, for the next entry.
	kpTakeRounds = 4
)

// OpKPLow is a stateless control-log entry: a take on some node left User's device
// with few KeyPackages (Value: KPLowNote); every node tells that device's connections.
const OpKPLow = "kp_low"

var (
	//go:embed lua/kp.lua
	kpSource string
	kpScript = rueidis.NewLuaScript(kpSource)
)

// Errors of the KeyPackage directory.
var (
	// ErrKPFull refuses an upload that would leave the device more than the cap.
	ErrKPFull = errors.New("cluster: the device would hold more KeyPackages than allowed")
	// ErrBadDevice refuses an empty device id in a key.
	ErrBadDevice = errors.New("cluster: empty device id")
)

// KPKnownError refuses an upload whose entry Index (from 0) is stored already, was
// used before, or repeats an earlier entry of the batch: nothing was stored.
type KPKnownError struct{ Index int }

// Error says which entry.
func (e *KPKnownError) Error() string {
	return fmt.Sprintf("cluster: KeyPackage %d was uploaded or used before", e.Index)
}

// KP is one KeyPackage as the directory keeps it: its KeyPackageRef, the whole
// MLSMessage and the end of its lifetime (Unix seconds).
type KP struct {
	Ref, Msg []byte
	NotAfter int64
}

// DeviceRef names one device of one user.
type DeviceRef struct{ User, Device string }

// Taken is what Take popped for one device: its KeyPackage (Msg nil when it had
// none) and how many it has left.
type Taken struct {
	KP
	Left int
}

// KPLowNote is the Value of an OpKPLow entry.
type KPLowNote struct {
	Device string `json:"device"`
	Count  int    `json:"count"`
}

// DeviceKPs is a device's ZSET of sealed KeyPackages scored by NotAfter. The device id
// is base64url like the user id: device ids come from clients.
func (k Keys) DeviceKPs(user, device string) (string, error) {
	return k.deviceKey(user, device, ":kp:")
}

// DeviceKPUsed is a device's ZSET of used KeyPackageRefs (hex) scored by NotAfter.
func (k Keys) DeviceKPUsed(user, device string) (string, error) {
	return k.deviceKey(user, device, ":kpused:")
}

// deviceKey is userKey(user, kind+base64url(device)).
func (k Keys) deviceKey(user, device, kind string) (string, error) {
	if device == "" {
		return "", ErrBadDevice
	}
	return k.userKey(user, kind+base64.RawURLEncoding.EncodeToString([]byte(device)))
}

// kpKeys are a device's two keys for kp.lua.
func (c *Ctl) kpKeys(user, device string) ([]string, error) {
	stored, err := c.keys.DeviceKPs(user, device)
	if err != nil {
		return nil, err
	}
	used, err := c.keys.DeviceKPUsed(user, device)
	if err != nil {
		return nil, err
	}
	return []string{stored, used}, nil
}

// kpBody is what an entry's seal covers: the ref (hex), NotAfter and the message, so
// none can be changed beside the others. The scope is the device's key.
func kpBody(ref string, notAfter int64, msg []byte) []byte {
	b := make([]byte, 0, len(ref)+len(msg)+22)
	b = append(b, ref...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, notAfter, 10)
	b = append(b, ' ')
	return append(b, msg...)
}

// kpArgs are kp.lua's first arguments.
func kpArgs(op string, now time.Time, last string) []string {
	return []string{op, strconv.FormatInt(now.Unix(), 10), strconv.FormatInt(int64(kpGrace/time.Second), 10), last}
}

// UploadKPs stores kps for user's device, atomically: refused whole with
// *KPKnownError when one is stored or was used before (or repeats one of the batch),
// with ErrKPFull when the device would hold more than max; else it returns the new
// count. Entries expired at now, and used refs long expired, are dropped on the way.
func (c *Ctl) UploadKPs(ctx context.Context, user, device string, kps []KP, max int, now time.Time) (int, error) {
	keys, err := c.kpKeys(user, device)
	if err != nil {
		return 0, err
	}
	args := append(make([]string, 0, 4+3*len(kps)), kpArgs("upload", now, strconv.Itoa(max))...)
	for _, kp := range kps {
		if len(kp.Ref) == 0 || len(kp.Msg) == 0 || kp.NotAfter <= 0 {
			return 0, errors.New("cluster: an empty KeyPackage")
		}
		ref := hex.EncodeToString(kp.Ref)
		args = append(args, ref, strconv.FormatInt(kp.NotAfter, 10), string(c.sealer.Seal(keys[0], kpBody(ref, kp.NotAfter, kp.Msg))))
	}
	ctx, cancel := context.WithTimeout(ctx, kpTimeout)
	defer cancel()
	n, err := kpScript.Exec(ctx, c.client, keys, args).AsInt64()
	if err != nil {
		msg := err.Error()
		if strings.HasPrefix(msg, "FULL") {
			return 0, ErrKPFull
		}
		if i, perr := strconv.Atoi(strings.TrimPrefix(msg, "KNOWN ")); strings.HasPrefix(msg, "KNOWN ") && perr == nil {
			return 0, &KPKnownError{Index: i}
		}
		return 0, fmt.Errorf("cluster: KeyPackage upload: %w", err)
	}
	return int(n), nil
}

// TakeKPs pops, for each device of want, the KeyPackage that expires first among
// those still live at now, recording its ref as used: each entry goes to exactly one
// caller across every node. The devices may be of several users: one script per
// device, all in one round trip. The answer has one Taken per device, in order; a
// device whose script failed keeps a zero Taken and the first such error is returned
// with the others' results (an entry popped is never lost silently). An entry whose
// seal fails is dropped, counted as forged and never returned; the device's next one
// is tried.
func (c *Ctl) TakeKPs(ctx context.Context, want []DeviceRef, now time.Time) ([]Taken, error) {
	keys := make([][]string, len(want))
	todo := make([]int, len(want))
	for i, d := range want {
		k, err := c.kpKeys(d.User, d.Device)
		if err != nil {
			return nil, err
		}
		keys[i], todo[i] = k, i
	}
	out := make([]Taken, len(want))
	var first error
	for round := 0; round < kpTakeRounds && len(todo) > 0; round++ {
		execs := make([]rueidis.LuaExec, len(todo))
		for j, i := range todo {
			execs[j] = rueidis.LuaExec{Keys: keys[i], Args: kpArgs("take", now, strconv.Itoa(kpSkipMax))}
		}
		rctx, cancel := context.WithTimeout(ctx, kpTimeout)
		results := kpScript.ExecMulti(rctx, c.client, execs...)
		cancel()
		var again []int
		for j, r := range results {
			i := todo[j]
			kp, left, forged, err := c.popped(keys[i][0], r, now)
			if err != nil {
				first = cmp.Or(first, err)
				continue
			}
			out[i] = Taken{KP: kp, Left: left}
			if forged {
				again = append(again, i)
			}
		}
		todo = again
	}
	return out, first
}

// popped reads one take's answer {member, NotAfter, left, skipped}. forged says the
// member failed its check (counted, like the entries the script skipped).
func (c *Ctl) popped(scope string, r rueidis.RedisResult, now time.Time) (kp KP, left int, forged bool, err error) {
	arr, err := r.ToArray()
	if err != nil {
		return KP{}, 0, false, fmt.Errorf("cluster: KeyPackage take: %w", err)
	}
	if len(arr) != 4 {
		return KP{}, 0, false, errors.New("cluster: KeyPackage take: malformed answer")
	}
	member, err1 := arr[0].ToString()
	score, err2 := arr[1].ToString()
	n, err3 := arr[2].AsInt64()
	skipped, err4 := arr[3].AsInt64()
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return KP{}, 0, false, fmt.Errorf("cluster: KeyPackage take: %w", err)
	}
	c.bad.Add(uint64(max(skipped, 0)))
	if member == "" {
		return KP{}, int(n), false, nil
	}
	kp, ok := c.openKP(scope, member, score, now)
	if !ok {
		c.bad.Add(1)
		return KP{}, int(n), true, nil
	}
	return kp, int(n), false, nil
}

// openKP checks a popped member "<ref hex> <sealed entry>" of the device whose key
// is scope: the seal, and that the ref and NotAfter beside it are those it seals (a
// rescored entry would outlive its lifetime) and still live at now.
func (c *Ctl) openKP(scope, member, score string, now time.Time) (KP, bool) {
	refHex, sealed, ok := strings.Cut(member, " ")
	if !ok {
		return KP{}, false
	}
	env, err := c.sealer.Open(scope, []byte(sealed))
	if err != nil {
		return KP{}, false
	}
	bodyRef, rest, ok1 := bytes.Cut(env.Body, []byte{' '})
	bodyNA, msg, ok2 := bytes.Cut(rest, []byte{' '})
	notAfter, err1 := strconv.ParseInt(string(bodyNA), 10, 64)
	scored, err2 := strconv.ParseFloat(score, 64)
	ref, err3 := hex.DecodeString(refHex)
	if !ok1 || !ok2 || err1 != nil || err2 != nil || err3 != nil || string(bodyRef) != refHex ||
		scored != float64(notAfter) || notAfter < now.Unix() || len(msg) == 0 {
		return KP{}, false
	}
	return KP{Ref: ref, Msg: bytes.Clone(msg), NotAfter: notAfter}, true
}

// CountKPs is how many KeyPackages user's device has stored (expired ones not yet
// dropped by an upload or a take included, as on a single node).
func (c *Ctl) CountKPs(ctx context.Context, user, device string) (int, error) {
	key, err := c.keys.DeviceKPs(user, device)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, kpTimeout)
	defer cancel()
	n, err := c.client.Do(ctx, c.client.B().Zcard().Key(key).Build()).AsInt64()
	if err != nil {
		return 0, fmt.Errorf("cluster: KeyPackage count: %w", err)
	}
	return int(n), nil
}

// KPLow tells every node that user's device has count KeyPackages left (a take left
// it low), so its connections there are told to upload more. It keeps no state.
func (c *Ctl) KPLow(ctx context.Context, user, device string, count int) (string, error) {
	v, err := json.Marshal(KPLowNote{Device: device, Count: count})
	if err != nil {
		return "", err
	}
	return c.append(ctx, CtlEntry{Op: OpKPLow, User: user, Value: v})
}
