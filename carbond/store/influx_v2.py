"""Writes to InfluxDB 2.x / 3.x / Cloud through influxdb-client's ``WriteApi`` (SYNCHRONOUS).

Imported only when a ``influxdb+v2[s]://`` URL is used. The client never retries or batches
on its own here: carbond's spool and delivery thread do that, and every failure is mapped
once into a classified :class:`~carbond.store.errors.WriteError`.
"""

from __future__ import annotations

from typing import Any

import urllib3

from carbond.errors import UsageError
from carbond.store.errors import WriteError, classify_status, classify_transport, server_message
from carbond.store.urls import StoreUrl


class V2Writer:
    def __init__(self, url: StoreUrl, *, token: str, timeout_s: float = 10.0, ca_certs: str | None = None) -> None:
        try:
            from influxdb_client import InfluxDBClient, WritePrecision
            from influxdb_client.client.write_api import SYNCHRONOUS
        except ImportError as exc:
            raise UsageError(f"store {url.redacted()}: InfluxDB v2 URLs need the influxdb-client package "
                             "(pip install 'carbond[influx]')") from exc
        self.where = url.redacted()
        self._bucket, self._org = url.database, url.org
        self._precision = WritePrecision.NS
        kwargs: dict[str, Any] = {"ssl_ca_cert": ca_certs} if ca_certs else {}
        self._client = InfluxDBClient(url=url.base_url, token=token or None, org=url.org, enable_gzip=True,
                                      timeout=(min(5_000, int(timeout_s * 1000)), int(timeout_s * 1000)),
                                      retries=False, **kwargs)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, body: bytes) -> None:
        from influxdb_client.rest import ApiException

        try:
            self._api.write(bucket=self._bucket, org=self._org, record=body, write_precision=self._precision)
        except ApiException as exc:
            headers = dict(exc.headers or {})
            raise classify_status(int(exc.status or 0), server_message(exc.body, headers), self.where, headers) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise classify_transport(exc, self.where) from exc
        except WriteError:
            raise
        except Exception as exc:  # anything else the client raises: keep it, retry later
            raise classify_transport(exc, self.where) from exc

    def close(self) -> None:
        try:
            self._api.close()
        finally:
            self._client.close()
