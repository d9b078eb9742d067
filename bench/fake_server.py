"""FakeTwilio in a process of its own, so a throughput benchmark measures the reporter
and not the emulator sharing its interpreter: ``python -m bench.fake_server LATENCY COUNT``
prints the base URL, credentials and COUNT seeded message SIDs as JSON, then serves until
its standard input closes."""

from __future__ import annotations

import json
import sys

from twilio_feedback.testing import FakeTwilio


def main() -> None:
    latency, count = float(sys.argv[1]), int(sys.argv[2])
    with FakeTwilio() as fake:
        sids = fake.add_messages(count)
        fake.latency = latency
        print(
            json.dumps(
                {
                    "base_url": fake.base_url,
                    "account_sid": fake.account_sid,
                    "auth_token": fake.auth_token,
                    "sids": sids,
                }
            ),
            flush=True,
        )
        sys.stdin.read()


if __name__ == "__main__":
    main()
