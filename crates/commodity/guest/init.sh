#!/bin/busybox sh
# /init of dualstack's built-in commodity guest (busybox-static initramfs, assembled on the host
# by `dualstack vm image build`). Kernel command line options it reads:
#   dualstack.workload=build|idle   what to run once booted (default idle)
#   dualstack.jobs=N                "compile" jobs per round of the build workload (default 16)
# Everything it prints goes to the serial console, which the host keeps as the VM's serial log.
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /tmp

workload=idle
jobs_per_round=16
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    dualstack.workload=*) workload=${arg#dualstack.workload=} ;;
    dualstack.jobs=*) jobs_per_round=${arg#dualstack.jobs=} ;;
  esac
done
ncpu=$(nproc)

# One "compile" job: generate a source file, preprocess it, hash it, compress it into an object.
# Like a compiler driver it forks and execs several short-lived programs, reads and writes files
# in a tmpfs and burns CPU (awk, sed, sha256sum, gzip).
compile() {
  src=$1/unit$2.c
  awk -v n="$2" 'BEGIN { for (i = 0; i < 400; i++)
      printf "static int f%d_%d(int x) { return x * %d + %d; }\n", n, i, i * 7 + n, (i * 31) % 97 }' > "$src"
  sed -e 's/static int/static long/g' -e 's/return x/return (long)x/' "$src" > "$src.i"
  grep -c 'static long' "$src.i" > "$1/unit$2.count"
  sha256sum "$src.i" > "$1/unit$2.d"
  gzip -c "$src.i" > "$1/unit$2.o"
  rm -f "$src" "$src.i"
}

# One worker per vCPU: rounds of `jobs_per_round` compile jobs and a "link" step, forever.
worker() {
  w=$1
  dir=/tmp/build$w
  round=0
  jobs=0
  while :; do
    round=$((round + 1))
    mkdir -p "$dir"
    j=0
    while [ "$j" -lt "$jobs_per_round" ]; do
      compile "$dir" "$j"
      j=$((j + 1))
    done
    cat "$dir"/unit*.o > "$dir/vmlinux.a"
    sha256sum "$dir/vmlinux.a" > /dev/null
    rm -rf "$dir"
    jobs=$((jobs + jobs_per_round))
    read -r up _ < /proc/uptime
    echo "dualstack-workload: round $round done worker=$w jobs=$jobs uptime=$up"
  done
}

echo "dualstack-guest: ready vcpus=$ncpu workload=$workload kernel=$(uname -r)"
case "$workload" in
  build)
    w=0
    while [ "$w" -lt "$ncpu" ]; do
      worker "$w" &
      w=$((w + 1))
    done
    echo "dualstack-workload: started workers=$ncpu jobs_per_round=$jobs_per_round"
    ;;
  idle) ;;
  *) echo "dualstack-guest: unknown workload '$workload', idling" ;;
esac
# PID 1 must never exit.
while :; do sleep 3600; done
