#!/usr/bin/env python3
"""Writes a Telegraf-like line-protocol file for `influx-tee parse --format stats`.

Same shapes as `telegraf_lines` in benches/line_protocol.rs (cpu, mem, disk, net and
syslog lines of ~150-250 bytes with 5-10 fields of every type). Never commit the output.

    python3 benches/gen_telegraf_lp.py /tmp/telegraf-100mb.lp 100
"""
import random
import sys


def main() -> None:
    path = sys.argv[1]
    megabytes = float(sys.argv[2]) if len(sys.argv) > 2 else 100.0
    target = int(megabytes * 1_000_000)
    rng = random.Random(2)
    hosts = ["web-01", "web-02", "db-primary", "cache-3", "worker-17"]
    ts = 1_700_000_000_000_000_000
    written = 0

    def fl() -> str:
        return f"{rng.randrange(1000)}.{rng.randrange(100):02d}"

    with open(path, "w", encoding="ascii", newline="\n") as out:
        chunk = []
        while written < target:
            ts += 10_000_000_000 + rng.randrange(1_000_000)
            host = rng.choice(hosts)
            kind = rng.randrange(5)
            if kind == 0:
                line = (f"cpu,cpu=cpu{rng.randrange(16)},host={host} usage_user={fl()},usage_system={fl()},"
                        f"usage_idle={fl()},usage_iowait={fl()},usage_steal=0 {ts}\n")
            elif kind == 1:
                line = (f"mem,host={host} active={rng.randrange(1 << 34)}i,available={rng.randrange(1 << 34)}i,"
                        f"available_percent={fl()},buffered={rng.randrange(1 << 30)}i,cached={rng.randrange(1 << 33)}i,"
                        f"free={rng.randrange(1 << 33)}i,used_percent={fl()} {ts}\n")
            elif kind == 2:
                line = (f"disk,device=nvme0n1p{rng.randrange(4)},fstype=ext4,host={host},mode=rw,path=/var/lib "
                        f"free={rng.randrange(1 << 40)}i,inodes_free={rng.randrange(1 << 24)}i,"
                        f"inodes_used={rng.randrange(1 << 20)}i,total={rng.randrange(1 << 41)}i,"
                        f"used={rng.randrange(1 << 40)}i,used_percent={fl()} {ts}\n")
            elif kind == 3:
                line = (f"net,host={host},interface=eth{rng.randrange(2)} bytes_recv={rng.randrange(1 << 40)}i,"
                        f"bytes_sent={rng.randrange(1 << 40)}i,drop_in=0i,err_in=0i,"
                        f"packets_recv={rng.randrange(1 << 30)}i,packets_sent={rng.randrange(1 << 30)}i,up=true {ts}\n")
            else:
                line = (f"syslog,appname=sshd,facility=auth,host={host},severity=info facility_code=4i,"
                        f"message=\"Accepted publickey for deploy from 10.0.{rng.randrange(256)}.{rng.randrange(256)} "
                        f"port {rng.randrange(65536)}\",procid=\"{rng.randrange(99999)}\",severity_code=6i,"
                        f"timestamp={ts // 1000}i,version=1i {ts}\n")
            chunk.append(line)
            written += len(line)
            if len(chunk) >= 10_000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))


if __name__ == "__main__":
    main()
