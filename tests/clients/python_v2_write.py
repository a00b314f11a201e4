"""Writes generated points through influx-tee with the official Python influxdb-client.

Usage: python_v2_write.py URL ORG BUCKET TOKEN MEASUREMENT COUNT BASE_NS

Uses both the synchronous and the batching write API, as applications do, and
prints the number of points written. Exits non-zero if the client reports an error.
"""
import sys

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS, WriteOptions


def main():
    url, org, bucket, token, measurement, count, base = sys.argv[1:8]
    count, base = int(count), int(base)
    half = count // 2
    errors = []
    with InfluxDBClient(url=url, token=token, org=org) as client:
        sync = client.write_api(write_options=SYNCHRONOUS)
        points = [
            Point(measurement).tag("host", f"h{i % 3}").tag("api", "sync")
            .field("value", float(i)).field("count", i)
            .time(base + i * 1_000_000, WritePrecision.NS)
            for i in range(half)
        ]
        sync.write(bucket=bucket, record=points)

        def on_error(conf, data, exception):
            errors.append(exception)

        with client.write_api(
            write_options=WriteOptions(batch_size=100, flush_interval=200),
            error_callback=on_error,
        ) as batching:
            for i in range(half, count):
                line = f"{measurement},host=h{i % 3},api=batch value={float(i)},count={i}i {base + i * 1_000_000}"
                batching.write(bucket=bucket, record=line, write_precision=WritePrecision.NS)
    if errors:
        print(f"errors: {errors}", file=sys.stderr)
        sys.exit(1)
    print(count)


if __name__ == "__main__":
    main()
