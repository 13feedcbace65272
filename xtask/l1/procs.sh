# Shell functions the L1 jobs share (jobs-device.sh, jobs-fuzz.sh), which
# source this file from their working directory.

# The number of Rust panics of rkvm in the kernel log.
panics() { dmesg | grep -c 'rkvm: Rust panic'; }

# Whether process $1 is still running: one of its threads is neither gone
# nor a zombie. Its first thread's state is not enough: when a panic kills
# that thread and another lives on, the first shows as a zombie until the
# last one ends.
alive() {
	for task in /proc/"$1"/task/*; do
		state=$(sed 's/.*) //' "$task/stat" 2>/dev/null | cut -d' ' -f1)
		[ -n "$state" ] && [ "$state" != Z ] && return 0
	done
	return 1
}
