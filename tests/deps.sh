# Debian 12 packages alps needs to build and test (sourced by the scripts).
ALPS_BUILD_DEPS="autoconf automake pkg-config make gcc libc6-dev
 libevent-dev libprotobuf-c-dev protobuf-c-compiler libsqlite3-dev libfabric-dev
 libhwloc-dev libcurl4-openssl-dev libssl-dev libjansson-dev libarchive-dev
 libisal-dev libzstd-dev libsquashfs-dev libslurm-dev libyaml-dev"
ALPS_TEST_DEPS="libcmocka-dev groff-base python3 python3-pytest python3-protobuf protobuf-compiler
 docker-registry umoci skopeo squashfuse squashfs-tools squashfs-tools-ng fuse3
 sqlite3 iproute2 procps util-linux openssl apache2-utils clang libclang-rt-14-dev
 busybox-static mount debhelper dpkg-dev siftool python3-prometheus-client
 slurmctld slurmd slurm-client munge libpmix-dev"

# Install what is missing (root only; others get told what to install).
alps_install_deps() {
	missing=""
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	if [ "$(id -u)" != 0 ]; then
		echo "missing Debian packages:$missing (run as root, or apt-get install them)" >&2
		return 1
	fi
	echo "installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null 2>&1 || apt-get update
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
		apt-get install -y --no-install-recommends $missing
}
