"""An organization's events queue in SQS: checked when registered, long-polled by `orgsync events`.

Messages are deleted only after what they asked for is committed (at least once: a message read twice
is harmless), and a message orgsync cannot read is never deleted: SQS's redrive policy moves it to the
queue's dead-letter queue once it has been received often enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from domain.errors import AwsStepFailed

from .session import error_code, error_message

WAIT_SECONDS = 20  # SQS's longest long poll: an idle queue costs 3 requests a minute
BATCH = 10  # SQS's most messages per receive and per delete


@dataclass(frozen=True)
class Received:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


def check_queue(client: Any, url: str) -> str:
    """The queue's ARN, read with the given client's credentials; AwsStepFailed names the reason."""
    try:
        answer = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    except ClientError as exc:
        raise AwsStepFailed(
            "read the events queue",
            f"{url}: {error_code(exc)}: {error_message(exc)}",
            code=error_code(exc),
            aws_message=error_message(exc),
        ) from None
    except BotoCoreError as exc:
        raise AwsStepFailed("read the events queue", f"{url}: {type(exc).__name__}") from None
    return str(answer.get("Attributes", {}).get("QueueArn", ""))


def receive(
    client: Any, url: str, *, wait_seconds: int = WAIT_SECONDS, visibility_timeout: int | None = None
) -> list[Received]:
    """Up to BATCH messages, waiting up to `wait_seconds` for the first (a long poll), hidden from other
    readers for `visibility_timeout` seconds (None: the queue's own)."""
    params: dict[str, Any] = {"VisibilityTimeout": visibility_timeout} if visibility_timeout is not None else {}
    answer = client.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=BATCH,
        WaitTimeSeconds=wait_seconds,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
        **params,
    )
    return [
        Received(
            str(m.get("MessageId", "")),
            str(m["ReceiptHandle"]),
            str(m.get("Body", "")),
            int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
        )
        for m in answer.get("Messages", [])
    ]


def delete(client: Any, url: str, messages: list[Received]) -> list[str]:
    """Delete `messages` (BATCH per request); returns the ids SQS did not delete (they come back later)."""
    failed: list[str] = []
    for start in range(0, len(messages), BATCH):
        chunk = messages[start : start + BATCH]
        answer = client.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)],
        )
        failed += [chunk[int(f["Id"])].message_id for f in answer.get("Failed", [])]
    return failed
