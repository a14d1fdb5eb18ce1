package main

import (
	"runtime/debug"

	"modified-chat/internal/crash"
)

// Per-request tasks: the reads the hub starts on a goroutine of their own for one
// request (a history page, a file, the sender of a message to delete, a record or a
// Welcome from Redis) and whose result comes back to the hub's loop as a completion.
// None of them owns state: the request's connection, and the hub's bookkeeping for it
// (histBusy, a shared page and its waiters, fetching, a flight, a pending refresh),
// wait for the completion. A bug that panics in one must cost that one request, not
// the process: Go would end it with status 2 and no log line, and a request any client
// can send would then stop the server for everyone. So every such goroutine is started
// by goTask, which recovers the panic, logs and counts it, and hands the hub a failed
// function that finishes the request instead: its requester is answered `internal`
// with the request's ref, and whatever the request held is given back, so the
// connection goes on and its next request is served.
//
// The goroutines that own state nothing else can rebuild (the hub's loop, the store
// writer, the cluster feeds, the control writer's own loop, the connection slot
// renewals) are not tasks: a panic there ends the process with crash.ExitCode
// (internal/crash). Hub.later is not one either: it only hands a function to the loop.
// The jobs the control writer and the KeyPackage directory run one at a time are
// tasks on their queue's goroutine (clusterControl.runJob): each is one request's call.

// The tasks, by name: the task label of chat_task_panics_total and the task field of
// the log line.
const (
	taskHistory        = "history"         // a history page from the store
	taskClusterHistory = "cluster_history" // a history page from a room's Stream
	taskFetchFile      = "fetch_file"      // a file's bytes, from the store or a Stream
	taskDeleteRead     = "delete_read"     // the sender of a message to delete
	taskReserveRoom    = "reserve_room"    // a new room's place in the rooms index
	taskRoomRead       = "room_read"       // a room's record, for the commands waiting on it
	taskRoomRecheck    = "room_recheck"    // a room's revision, before no_such_room
	taskPeerRead       = "peer_read"       // whether an open_dm's peer is on another node
	taskWelcomeRead    = "welcome_read"    // the Welcome kept for a device, from a Stream
	taskAuditRead      = "audit_read"      // the cluster's audit log
	taskJanitor        = "janitor"         // one round of the janitor (pruning, sweeping)
	taskPolicyReload   = "policy_reload"   // re-reading the policy file on SIGHUP
	taskCtlJob         = "ctl_job"         // one change or announcement on the control writer's queue
	taskKPJob          = "kp_job"          // one call on the KeyPackage directory's queue
)

// testHookTask, when set (tests only; nil in production), is called by each task as
// it starts, with the task's name: a test makes it panic to see the guard work. It
// costs one nil check per task, nothing per message.
var testHookTask func(task string)

// goTask runs work on a goroutine of its own (runTask). When work panics, failed, when
// set, runs on the hub's loop to finish the request work would have finished: answer
// its requester and give back what the request held. work sends its completion last,
// so after a panic none was sent and failed is the only one. failed is never run once
// the hub has stopped.
func (h *Hub) goTask(task string, work, failed func()) {
	go func() {
		if !h.runTask(task, work) && failed != nil {
			h.complete(failed)
		}
	}()
}

// runTask runs work on the calling goroutine and reports whether it returned: a panic
// in it (a bug) is recovered, logged and counted (taskPanicked), and runTask reports
// false. The janitor's rounds and the policy reloads run through it too: each is one
// piece of work that holds nothing the next needs, so the next goes on.
func (h *Hub) runTask(task string, work func()) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			h.taskPanicked(task, v)
		}
	}()
	if testHookTask != nil {
		testHookTask(task)
	}
	work()
	return true
}

// taskPanicked logs a task's panic with its stack and counts it: the task's name and
// the panic's value as crash.Value gives it (its type; the text of an error or string,
// capped), never what the task read or was asked (message text, file bytes, records).
func (h *Hub) taskPanicked(task string, v any) {
	h.metrics.taskPanics.WithLabelValues(task).Inc()
	kind, text := crash.Value(v)
	h.log.Error("request task failed", "task", task, "panic_type", kind, "panic", text, "stack", string(debug.Stack()))
}

// taskFailedMessage is the message of the `internal` a failed task answers.
const taskFailedMessage = "the server failed on this request; nothing was done, try again"

// taskFailedEvent is the answer to a request whose task panicked: `internal`, with the
// request's ref and room (either may be empty).
func taskFailedEvent(ref, room string) []byte {
	return errorEvent(codeInternal, taskFailedMessage, ref, room)
}

// taskFailed answers `internal` to a command whose task panicked, if its connection is
// still there, and counts it as a refusal.
func (h *Hub) taskFailed(c *Client, env *envelope) {
	h.refuseLater(c, env, codeInternal, taskFailedMessage)
}

// cmdFailed is taskFailed for a command that waited on the task: on the readPump's
// reply channel when the readPump waits for the answer (a file announcement).
func (h *Hub) cmdFailed(cmd command) {
	if _, ok := h.clients[cmd.client]; !ok || cmd.client == nil || (cmd.env == nil && cmd.reply == nil) {
		return // gone, or the server's own need of the record
	}
	h.refuseCmd(cmd, newProtoError(codeInternal, taskFailedMessage))
}
