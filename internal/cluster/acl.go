package cluster

import "strings"

// ACLRules is the Redis ACL (SCALE-OUT.md §3.6) that confines the app's Redis user to
// the deployment's own keys and channels: everything under prefix, nothing else, and
// none of the commands that could read or wipe other data or reconfigure the server
// (FLUSHALL, KEYS, CONFIG, SCRIPT FLUSH/KILL, FUNCTION, ...). Redis checks key and
// channel patterns inside Lua scripts too. The operator applies it as
//
//	ACL SETUSER <user> on ><password> <ACLRules(prefix)>
//
// and turns the default user off; README shows the whole setup.
func ACLRules(prefix string) string {
	return strings.Join([]string{
		"resetkeys", "~" + prefix + ":*",
		"resetchannels", "&" + prefix + ":*",
		"-@all", "+@read", "+@write", "+@stream", "+@pubsub", "+@scripting", "+@connection", "+@fast",
		"-@dangerous", "-@admin", "-script|flush", "-script|kill", "-function",
	}, " ")
}
