"""Writes generated points with the Python `influxdb` (v1 API) client.

Usage: python_v1_write.py HOST PORT USER PASSWORD DB MEASUREMENT COUNT BASE_NS MODE

MODE is `good` (COUNT valid points, in batches of 100) or `bad` (valid points plus one
line InfluxDB cannot parse). Prints `ok` or the HTTP status the client reported, so a
test can compare what the client saw with and without the proxy.
"""
import sys

from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError


def main():
    host, port, user, password, db, measurement, count, base, mode = sys.argv[1:10]
    count, base = int(count), int(base)
    client = InfluxDBClient(host=host, port=int(port), username=user, password=password, database=db)
    points = [
        {
            "measurement": measurement,
            "tags": {"host": f"h{i % 4}", "client": "python-v1"},
            "time": base + i * 1000,
            "fields": {"value": float(i) / 4, "count": i, "ok": i % 2 == 0, "note": f"n{i}"},
        }
        for i in range(count)
    ]
    try:
        if mode == "good":
            client.write_points(points, time_precision="n", batch_size=100)
        else:
            lines = [f"{measurement},host=bad,client=python-v1 value=1 {base + count * 1000}",
                     f"{measurement},host=bad value=1.1.1 {base + count * 1000 + 1}"]
            client.write_points(lines, time_precision="n", protocol="line")
        print("ok")
    except (InfluxDBClientError, InfluxDBServerError) as error:
        print(getattr(error, "code", "error"))


if __name__ == "__main__":
    main()
