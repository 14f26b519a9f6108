"""The DCI (SPDCI) Social Registry envelope: the `{signature, header, message}` Tepat reads and
answers under /dci/ (docs/dci.md).

Names follow the standard's `social_api_v1.0.0.yaml` (MsgHeader_V1.0.0, SearchRequest,
SearchResponse, TxnStatusRequest, the acknowledgement `Response`). What each search item asks
(`query`, `pagination`) is checked by app.services.dci, item by item, so a bad item is rejected
with the standard's `rjct.*` reason while the others are answered.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from app.identifiers import RULE_SET_ID_PATTERN, SNAPSHOT_ID_PATTERN

MAX_ITEMS = 100  # search_request items in one message
MAX_SUBSCRIBE = 20  # subscribe_request items, or subscription codes, in one message
TEXT_ID = Field(min_length=1, max_length=99)


def _text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("an ISO 8601 date-time with a time zone, as a string")
    return value


# ISO 8601 text with a time zone (a number is refused, not read as seconds since 1970).
Timestamp = Annotated[AwareDatetime, BeforeValidator(_text), Field(strict=False)]
# The standard's locale pattern is `^[a-z]{3,3}$` (ISO 639-3) while its own example is "en":
# both two- and three-letter codes are accepted (docs/dci.md, where the standard errs).
LOCALE = Field(None, pattern=r"^[a-z]{2,3}$", examples=["ind"])


class _Loose(BaseModel):
    """The standard's objects allow members they do not name: those are ignored. What is named
    is strict (`"is_msg_encrypted": "0"` is refused, never coerced); timestamps are read from
    their ISO 8601 text."""

    model_config = ConfigDict(extra="ignore", strict=True)


class DciHeaderMeta(_Loose):
    """Tepat's use of the header's free `meta`: pin a snapshot and a rule set, as REST does."""

    snapshot: str | None = Field(
        None, pattern=SNAPSHOT_ID_PATTERN, description="DTSEN release id; default the current"
    )
    rule_set: str | None = Field(
        None, pattern=RULE_SET_ID_PATTERN, description="Default: in force on the cut-off date"
    )


class DciHeader(_Loose):
    """MsgHeader_V1.0.0."""

    version: str = Field("1.0.0", examples=["1.0.0"])
    message_id: str = TEXT_ID
    message_ts: Timestamp = Field(description="ISO 8601 with a time zone")
    action: str = Field(description="`search` or `txn-status`, as the path")
    sender_id: str = Field(min_length=1, max_length=200, examples=["spmis.kemensos.go.id"])
    sender_uri: str | None = Field(
        None,
        max_length=2000,
        description="Async only: where the callback goes (`on-search`, `txn/on-status` is "
        "appended unless it already ends so). It must lie under the client's registered "
        "callback prefix; anything else is refused (`err.sender_uri.invalid`).",
    )
    receiver_id: str | None = Field(None, max_length=200)
    total_count: int = Field(ge=0, description="Requests in the message")
    is_msg_encrypted: bool = Field(False, description="Encrypted messages are not supported")
    meta: DciHeaderMeta | None = None


class DciPagination(_Loose):
    page_size: int = Field(ge=1, le=100, examples=[10])
    page_number: int = Field(1, ge=1, le=1000, examples=[1])


class DciSearchCriteria(_Loose):
    version: str = "1.0.0"
    reg_event_type: str | None = None
    query_type: str = Field(
        description="`idtype-value`, `expression` or `predicate`", examples=["idtype-value"]
    )
    query: Any = Field(
        description="idtype-value: `{type: NIK | KK, value}`. predicate: a list of "
        "`{seq_num, expression1: {attribute_name, operator, attribute_value}, condition, "
        "expression2}`. expression: `{type: predicate, value: {expression: [...]}}` with the "
        "same list (docs/dci.md)."
    )
    sort: SkipJsonSchema[Any] = None
    pagination: Any = Field(
        None,
        description="`{page_size: 1-100, page_number: 1-1000}`; default page_size 10",
        json_schema_extra={"type": "object"},
    )
    consent: dict[str, Any] | None = None
    authorize: dict[str, Any] | None = None


class DciSearchItem(_Loose):
    reference_id: str = TEXT_ID
    timestamp: Timestamp
    search_criteria: DciSearchCriteria
    locale: str | None = LOCALE


class DciSearchMessage(_Loose):
    """SearchRequest."""

    transaction_id: str = TEXT_ID
    search_request: list[DciSearchItem] = Field(min_length=1, max_length=MAX_ITEMS)


class DciSearchEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    signature: str | None = Field(
        None,
        description="A detached JWS over the canonical JSON of header and message, checked "
        "against the client's registered keys (docs/dci.md)",
    )
    header: DciHeader
    message: DciSearchMessage


class DciTxnStatusQuery(_Loose):
    reference_id: str = TEXT_ID
    # The standard spells it `subscibe`; both spellings are read (docs/dci.md).
    txn_type: Literal["search", "subscribe", "subscibe", "receipt"]
    attribute_type: Literal["transaction_id", "reference_id_list", "correlation_id"]
    attribute_value: str | list[str] = Field(description="As attribute_type says")
    locale: str | None = LOCALE


class DciTxnStatusMessage(_Loose):
    """TxnStatusRequest."""

    transaction_id: str = TEXT_ID
    txnstatus_request: DciTxnStatusQuery


class DciTxnStatusEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    signature: str | None = Field(
        None,
        description="A detached JWS over the canonical JSON of header and message, checked "
        "against the client's registered keys (docs/dci.md)",
    )
    header: DciHeader
    message: DciTxnStatusMessage


class DciSubscribeCriteria(_Loose):
    """SubscribeRequest's `subscribe_criteria`: what to be notified of (docs/dci.md)."""

    version: str = "1.0.0"
    reg_type: str | None = None
    reg_event_type: str = Field(
        description="`eligibility_changed` (any change), or one kind: `gained`, `lost`, "
        "`benefit_changed`, `level_changed`",
        examples=["eligibility_changed"],
    )
    frequency: SkipJsonSchema[Any] = None
    filter_type: str | None = Field(None, description="`predicate` (the default) or `expression`")
    filter: Any = Field(
        description="A predicate list on `program` (eq, in), `change` (eq, in) and "
        "`region_code` (eq: a 2-10 digit prefix of the kode wilayah), ANDed; `[]` for all",
        json_schema_extra={"type": "array", "items": {"type": "object"}},
    )
    notify_record_type: str = Field(description="`Person`", examples=["Person"])
    authorize: dict[str, Any] | None = None


class DciSubscribeItem(_Loose):
    reference_id: str = TEXT_ID
    timestamp: Timestamp
    subscribe_criteria: DciSubscribeCriteria
    locale: str | None = LOCALE


class DciSubscribeMessage(_Loose):
    """SubscribeRequest."""

    transaction_id: str = TEXT_ID
    subscribe_request: list[DciSubscribeItem] = Field(min_length=1, max_length=MAX_SUBSCRIBE)


class DciSubscribeEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    signature: str | None = Field(
        None,
        description="A detached JWS over the canonical JSON of header and message, checked "
        "against the client's registered keys (docs/dci.md)",
    )
    header: DciHeader
    message: DciSubscribeMessage


class DciUnsubscribeMessage(_Loose):
    """UnSubscribeRequest. The standard spells its members `timesstamp` (and requires
    `timestamp`) and `subscription_codes` (requiring `sunscription_codes`): either spelling is
    read (docs/dci.md)."""

    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)

    transaction_id: str = TEXT_ID
    timestamp: Timestamp | None = Field(
        None, validation_alias=AliasChoices("timestamp", "timesstamp")
    )
    subscription_codes: list[Annotated[str, Field(min_length=1, max_length=99)]] = Field(
        min_length=1,
        max_length=MAX_SUBSCRIBE,
        validation_alias=AliasChoices("subscription_codes", "sunscription_codes"),
        description="The codes `on-subscribe` answered",
    )


class DciUnsubscribeEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    signature: str | None = Field(
        None,
        description="A detached JWS over the canonical JSON of header and message, checked "
        "against the client's registered keys (docs/dci.md)",
    )
    header: DciHeader
    message: DciUnsubscribeMessage


# --- answers (documentation of what the service renders) -------------------------------------

Status = Literal["rcvd", "pdng", "succ", "rjct"]


class DciProvenance(BaseModel):
    """What produced the answer (the REST `meta`): in the callback header's `meta`."""

    model_config = ConfigDict(extra="allow")

    snapshot: dict[str, str]
    rule_set: dict[str, str]
    evaluation_date: dt.date
    request_id: str
    audit_id: str


class DciCallbackHeader(BaseModel):
    """MsgCallbackHeader_V1.0.0."""

    version: str
    message_id: str
    message_ts: dt.datetime
    action: str
    status: Status
    status_reason_code: str | SkipJsonSchema[None] = None
    status_reason_message: str | SkipJsonSchema[None] = None
    total_count: int
    completed_count: int
    sender_id: str
    receiver_id: str
    is_msg_encrypted: bool
    meta: DciProvenance | SkipJsonSchema[None] = None


class DciPage(BaseModel):
    page_size: int
    page_number: int
    total_count: int


class DciRecords(BaseModel):
    version: str
    reg_record_type: Literal["Person", "Group"]
    reg_records: list[dict[str, Any]] = Field(
        description="Person or Group (with its Member list) records: only what the client's "
        "field groups allow (docs/dci.md)"
    )


class DciSearchResult(BaseModel):
    reference_id: str
    timestamp: dt.datetime
    status: Status
    status_reason_code: str | SkipJsonSchema[None] = None
    status_reason_message: str | SkipJsonSchema[None] = None
    data: DciRecords | SkipJsonSchema[None] = None
    pagination: DciPage | SkipJsonSchema[None] = None
    locale: str | SkipJsonSchema[None] = None


class DciSearchResponse(BaseModel):
    transaction_id: str
    correlation_id: str
    search_response: list[DciSearchResult]


class DciSearchAnswer(BaseModel):
    """The sync search's answer (the async search's `on-search` callback body is the same)."""

    signature: str | SkipJsonSchema[None] = Field(
        None,
        description="Tepat's detached JWS over the canonical JSON of header and message "
        "(its key in /.well-known/jwks.json; docs/dci.md)",
    )
    header: DciCallbackHeader
    message: DciSearchResponse


class DciError(BaseModel):
    code: str = Field(examples=["err.sender_uri.invalid"])
    message: str


class DciAckMessage(BaseModel):
    ack_status: Literal["ACK", "NACK", "ERR"]
    timestamp: dt.datetime
    correlation_id: str
    error: DciError | SkipJsonSchema[None] = None


class DciAck(BaseModel):
    """The standard's acknowledgement `Response`."""

    message: DciAckMessage


class DciTxnStatus(BaseModel):
    txn_type: str
    txn_status: DciSearchResponse


class DciTxnStatusResponse(BaseModel):
    transaction_id: str
    correlation_id: str
    txnstatus_response: DciTxnStatus


class DciTxnStatusAnswer(BaseModel):
    signature: str | SkipJsonSchema[None] = Field(
        None,
        description="Tepat's detached JWS over the canonical JSON of header and message "
        "(its key in /.well-known/jwks.json; docs/dci.md)",
    )
    header: DciCallbackHeader
    message: DciTxnStatusResponse
