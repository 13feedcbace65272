#!/bin/busybox sh
# L1's init: mount the usual file systems, run the job in /job.sh, report
# its verdict, and leave the machine.
#
# The job prints its results as lines on the serial console:
#   RKVM-CHECK ok NAME
#   RKVM-CHECK fail NAME: what went wrong
#   RKVM-INFO text        (measurements and notes, shown to the user)
# and this script ends with "RKVM-END rc=N", N being the job's exit status.

/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmp /tmp
echo "RKVM-INFO L1 reached init $(cut -d' ' -f1 /proc/uptime) s after the kernel started"

cd /rkvm && sh /job.sh
rc=$?
echo "RKVM-END rc=$rc"

# The verdict byte: 0 when the job succeeded, 1 when it did not.
if [ "$rc" -eq 0 ]; then verdict=0; else verdict=1; fi
case " $(cat /proc/cmdline) " in
*" rkvm.exit=bochs "*)
	# Bochs stops the moment it is told to, and its serial port sends at
	# its emulated speed: first wait until the port's count of sent bytes
	# stops growing, so that no console output is lost.
	last=
	while sent=$(grep '^0:' /proc/tty/driver/serial); [ "$sent" != "$last" ]; do
		last=$sent
		sleep 0.1
	done
	# Bochs leaves when "Shutdown" is written to port 0x8900, byte by byte.
	for c in S h u t d o w n; do printf "$c" | dd of=/dev/port bs=1 seek=$((0x8900)) 2>/dev/null; done ;;
*)
	# QEMU's isa-debug-exit at port 0xf4: exit status 2 * verdict + 1.
	printf "\\00$verdict" | dd of=/dev/port bs=1 seek=$((0xf4)) 2>/dev/null ;;
esac
sleep 5
echo "RKVM-INFO the machine did not leave through its exit port"
poweroff -f
