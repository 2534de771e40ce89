#!/bin/sh
# The remote job wrapper. sshd's login shell runs it (a login shell outside the
# sh family execs `sh -c` for it), as the leader of the session's new process
# group: the wrapper, its job and all the job starts are alone in that group.
#
# pegasus/wrapper.py reads this file once: it drops the comments and blank
# lines, puts KILL_AFTER - 1, ORPHANED and the clock of the orphan timeout in place of
# their braces, and each job's random nonce in place of {nonce}.
# Comments stand beside the lines they explain, and never inside a quote.

# Started before its job is known (while Pegasus updates the queue file), it
# reads the command from the channel's stdin: its lines, then the nonce's line.
exec 3<&0 </dev/null  # the channel's stdin is fd 3 from here on
nl='
' command= sep=
while :; do
  IFS= read -r line <&3 || exit 0  # the channel ended first: run nothing
  [ "$line" = {nonce} ] && break
  command=$command$sep$line sep=$nl
done

# The job's stderr is the channel's (fd 4); the wrapper's own goes to /dev/null,
# where shells print "Killed" notices (Pegasus reports the signal itself).
exec 4>&2 2>/dev/null
# The wrapper must never die of a signal: ssh2-python cannot read SSH's
# exit-signal message, so that would read as exit 0. It survives the group's
# TERM and reports the job's status; when the job ignores TERM, the
# watchdog's USR1 makes it report 137.
report() { exit "${orphaned:-$1}"; }  # ORPHANED when the watchdog gave up on Pegasus
trap 'orphaned={ORPHANED}' USR2
trap '[ -z "$stopping" ] || report 137' USR1
# The job starts before the wrapper catches TERM: a shell just forked keeps its
# parent's handlers until it drops them, and a TERM then would be lost (KILL,
# 137, 3 s later). Nothing sends TERM yet: the watchdog starts after the trap.
sh -c "$command" 2>&4 3<&- 4>&- & job=$!  # in the background, so the traps run while it runs
trap 'stopping=1' TERM

# The watchdog reads fd 3, where Pegasus writes a line now and then. At
# end-of-file (a cancel, or Pegasus died) it sends TERM to the group, then
# KILL. After the orphan timeout without a line (Pegasus cut off or paused that long) it
# first tells the wrapper (USR2), which then reports ORPHANED, not a signal.
# Whoever stops the group ignores the TERM it sends; the others die of it.
(stop() { trap '' TERM; kill -0 "$$" 2>/dev/null || exit 0  # job ended: spare its leftovers
   kill -s TERM -- "-$$"; sleep {KILL_AFTER - 1}; kill -s USR1 "$$"  # USR1: say 137 before KILL
   sleep 1; kill -s KILL -- "-$$"; }
 orphan() { trap '' TERM; kill -s USR2 "$$"  # from here no heartbeat calls it off (kill "$timer")
   sleep 1; stop; }  # bash may take a TERM sent at once first
 if [ -n "$BASH_VERSION" ] && read -r -t 0 _ </dev/null; then  # bash, not a variable of that name
   # bash's read times out itself (status 128+ALRM), and each line restarts it:
   # the silence clock costs no process (it cost two process starts a job).
   while read -r -t {SILENCE} _ <&3 || { [ "$?" -gt 128 ] && orphan; stop; }; do :; done
 else
   # Other shells (dash has no read -t) keep a clock, which ticks in short
   # sleeps: a restarted one dies at once (TERM) and leaves at most one short
   # sleep behind, never a sleep as long as the orphan timeout.
   timer() { (n=0; while [ "$n" -lt {TICKS} ]; do sleep {TICK}; n=$((n+1)); done
     orphan) & timer=$!; }
   timer
   while read -r _ <&3; do
     kill "$timer"; timer  # restart the silence clock
   done
   kill "$timer"; stop
 fi) >/dev/null 2>&1 4>&- &  # not the channel's stderr: the job's alone

exec 3<&- 4>&-
wait "$job"; status=$?
while kill -0 "$job"; do wait "$job"; status=$?; done  # wait returns early when a trap runs
report "$status"  # 128+N when signal N killed the job
