"""Writes generated points with the official Python `influxdb-client` (v2 API).

Usage: python_v2_write.py URL ORG BUCKET TOKEN MEASUREMENT COUNT BASE_NS [MODE]

MODE `good` (default) writes COUNT points, half with the synchronous and half with
the batching write API, as applications do. MODE `bad` writes one valid and one
invalid line with the synchronous API. Prints the number of points written, or the
HTTP status the client reported, so a test can compare what the client saw with
and without the proxy.
"""
import sys

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS, WriteOptions
from influxdb_client.rest import ApiException


def main():
    url, org, bucket, token, measurement, count, base = sys.argv[1:8]
    mode = sys.argv[8] if len(sys.argv) > 8 else "good"
    count, base = int(count), int(base)
    errors = []
    with InfluxDBClient(url=url, token=token, org=org) as client:
        sync = client.write_api(write_options=SYNCHRONOUS)
        try:
            if mode == "bad":
                sync.write(bucket=bucket, record=[f"{measurement},api=bad value=1 {base}",
                                                  f"{measurement},api=bad value=1.1.1 {base + 1}"])
                print("ok")
                return
            half = count // 2
            points = [
                Point(measurement).tag("host", f"h{i % 3}").tag("api", "sync")
                .field("value", float(i)).field("count", i).field("note", f"n{i}")
                .time(base + i * 1_000_000, WritePrecision.NS)
                for i in range(half)
            ]
            sync.write(bucket=bucket, record=points)
        except ApiException as error:
            print(error.status)
            return

        def on_error(conf, data, exception):
            errors.append(exception)

        with client.write_api(
            write_options=WriteOptions(batch_size=100, flush_interval=200, max_retries=0),
            error_callback=on_error,
        ) as batching:
            for i in range(count // 2, count):
                line = f"{measurement},host=h{i % 3},api=batch value={float(i)},count={i}i,note=\"n{i}\" {base + i * 1_000_000}"
                batching.write(bucket=bucket, record=line, write_precision=WritePrecision.NS)
    if errors:
        print(getattr(errors[0], "status", "error"))
        return
    print(count)


if __name__ == "__main__":
    main()
