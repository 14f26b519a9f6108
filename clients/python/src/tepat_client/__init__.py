"""Python client for Tepat, the DTSEN eligibility API (lookups, bulk jobs, change lists,
receipts). See the README next to this package, and the service's /docs."""

from tepat_client._client import Answer, StreamError, Tepat, TepatError
from tepat_client.jobs import JobFailed, Jobs, verify_file
from tepat_client.receipts import ReceiptInvalid, verify_chunks, verify_receipt

__all__ = [
    "Answer",
    "JobFailed",
    "Jobs",
    "ReceiptInvalid",
    "StreamError",
    "Tepat",
    "TepatError",
    "verify_chunks",
    "verify_file",
    "verify_receipt",
]
__version__ = "0.1.0"
