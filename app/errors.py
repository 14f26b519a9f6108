"""Domain errors: each has a stable problem type, a title and an HTTP status (RFC 9457).

The faces render them once: REST as application/problem+json, GraphQL as an error with
`extensions.code`. Messages never carry a full NIK or No. KK (use app.identifiers.mask).
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "https://tepat.go.id/problems/"


class TepatError(Exception):
    code: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"
    status: ClassVar[int] = 500

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    @classmethod
    def type_uri(cls) -> str:
        return PROBLEM_BASE + cls.code.replace("_", "-")

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type_uri(),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class ValidationFailed(TepatError):
    code = "validation_failed"
    title = "The request is not valid"
    status = 422

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """As a request's own validation answers it: the field, and `errors` listing it."""
        body = super().problem(instance)
        field = str(body.setdefault("field", "body"))
        item: dict[str, Any] = {"field": field, "message": self.detail}
        if "value" in body:
            item["value"] = body["value"]
        body.setdefault("errors", [item])
        return body


class SnapshotNotFound(TepatError):
    code = "snapshot_not_found"
    title = "No such snapshot"
    status = 404


class SnapshotRetired(TepatError):
    code = "snapshot_retired"
    title = "The snapshot is retired"
    status = 410


class NoSnapshotPublished(TepatError):
    code = "no_snapshot_published"
    title = "No snapshot is published yet"
    status = 503


class RuleSetNotFound(TepatError):
    code = "rule_set_not_found"
    title = "No such rule set"
    status = 404


class NoRuleSetInForce(TepatError):
    code = "no_rule_set_in_force"
    title = "No rule set is in force on the snapshot's cut-off date"
    status = 409


class RuleSetConflict(TepatError):
    code = "rule_set_conflict"
    title = "A different rule set with this id is already loaded"
    status = 409


class DecisionsNotMaterialized(TepatError):
    code = "decisions_not_materialized"
    title = "The decisions of that snapshot under that rule set are not stored"
    status = 409


class SnapshotStateError(TepatError):
    code = "snapshot_state"
    title = "The snapshot cannot make that change"
    status = 409


class ClientNotFound(TepatError):
    code = "client_not_found"
    title = "No such client"
    status = 404


class Unauthenticated(TepatError):
    code = "unauthenticated"
    title = "A valid API key is required"
    status = 401


class Forbidden(TepatError):
    code = "forbidden"
    title = "Not granted to this client"
    status = 403


class PurposeRequired(TepatError):
    code = "purpose_required"
    title = "X-Purpose must name a purpose registered for this client"
    status = 403


class PayloadTooLarge(TepatError):
    code = "payload_too_large"
    title = "The request body is too large"
    status = 413


class RateLimited(TepatError):
    code = "rate_limited"
    title = "Too many lookups; retry later"
    status = 429


class TooManyStreams(TepatError):
    code = "too_many_streams"
    title = "Too many bulk streams at once for this client; retry when one has ended"
    status = 429


class IdleTimeout(TepatError):
    code = "idle_timeout"
    title = "The request body stopped arriving"
    status = 408


class QuotaExceeded(TepatError):
    code = "quota_exceeded"
    title = "The client's daily quota of NIK lookups is used up; retry after midnight WIB"
    status = 429


class BulkNotGranted(TepatError):
    code = "bulk_not_granted"
    title = "Bulk eligibility is not granted to this client"
    status = 403


class ClientSuspended(TepatError):
    code = "client_suspended"
    title = "The client is suspended; an operator must reinstate it"
    status = 403


class Unavailable(TepatError):
    code = "unavailable"
    title = "The service is temporarily unavailable; retry later"
    status = 503


class AuditUnavailable(Unavailable):
    code = "audit_unavailable"
    title = "The access could not be recorded, so no data is returned; retry later"


class AuditRecordNotFound(TepatError):
    code = "audit_record_not_found"
    title = "No such audit record of this client"
    status = 404


class NoCheckpoint(TepatError):
    code = "no_checkpoint"
    title = "No checkpoint of the audit log has been published yet"
    status = 404


class UnsupportedMediaType(TepatError):
    code = "unsupported_media_type"
    title = "The body's Content-Type is not one this endpoint reads"
    status = 415


class JobNotFound(TepatError):
    code = "job_not_found"
    title = "No such bulk job of this client"
    status = 404


class JobNotFinished(TepatError):
    code = "job_not_finished"
    title = "The bulk job has not finished; its answers are not complete yet"
    status = 409


class JobCancelled(TepatError):
    code = "job_cancelled"
    title = "The bulk job was cancelled and its answers deleted"
    status = 410


class RangeNotSatisfiable(TepatError):
    code = "range_not_satisfiable"
    title = "The requested byte range is outside the answer"
    status = 416


class CallbackNotAllowed(TepatError):
    code = "callback_not_allowed"
    title = "The callback address is not registered for this client"
    status = 403


class SignatureInvalid(TepatError):
    """A DCI message whose `signature` is missing (its client must sign) or does not verify."""

    code = "signature_invalid"
    title = "The message signature is missing or does not verify"
    status = 401


ALL_ERRORS: tuple[type[TepatError], ...] = (
    ValidationFailed,
    SnapshotNotFound,
    SnapshotRetired,
    NoSnapshotPublished,
    RuleSetNotFound,
    NoRuleSetInForce,
    DecisionsNotMaterialized,
    RuleSetConflict,
    SnapshotStateError,
    Unauthenticated,
    Forbidden,
    PurposeRequired,
    PayloadTooLarge,
    RateLimited,
    TooManyStreams,
    IdleTimeout,
    QuotaExceeded,
    BulkNotGranted,
    ClientSuspended,
    Unavailable,
    AuditUnavailable,
    AuditRecordNotFound,
    UnsupportedMediaType,
    JobNotFound,
    JobNotFinished,
    JobCancelled,
    RangeNotSatisfiable,
    NoCheckpoint,
    CallbackNotAllowed,
    SignatureInvalid,
)
