"""Perspective API dialect: requests, responses, errors and attribute mapping of
``/v1alpha1/comments:analyze`` and ``:suggestscore``, so a Perspective client switches by URL.

Perspective's attributes are mapped to commentdesk's tasks only where the meaning fits (see
docs/perspective.md); the scores are the same calibrated probabilities ``/v1/score`` returns.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from model.tasks import Task
from service.schemas import StoredStr, unstorable

MAX_COMMENT_BYTES = 20 * 1024
SUPPORTED_LANGUAGES = ("en",)
# Below this confidence a detected non-English language is not trusted: short English comments
# with slang or typos are often taken for another language (Perspective's known failure).
LANGUAGE_CONFIDENCE = 0.9
ERROR_TYPE_URL = "type.googleapis.com/google.commentanalyzer.v1alpha1.Error"


@dataclass(frozen=True)
class Attribute:
    task: Task
    label: str
    description: str


ATTRIBUTES: dict[str, Attribute] = {
    "TOXICITY": Attribute(
        Task.OFFENSIVE, "offensive", "Offensive language: insults, slurs, profanity, threats."
    ),
    "IDENTITY_ATTACK": Attribute(
        Task.HATE, "hate", "Hate speech against a group (trained on attacks on migrants, women)."
    ),
    # commentdesk's own attributes, for clients that want more than toxicity in the same call.
    "NEGATIVE_SENTIMENT": Attribute(Task.SENTIMENT, "negative", "The comment's tone is negative."),
    "POSITIVE_SENTIMENT": Attribute(Task.SENTIMENT, "positive", "The comment's tone is positive."),
    "NEEDS_REPLY": Attribute(
        Task.QUESTION, "question", "The comment asks the brand something that needs an answer."
    ),
    "IRONY": Attribute(Task.IRONY, "irony", "The comment is ironic or sarcastic."),
}


class PerspectiveError(Exception):
    """An error answered in Google's JSON error format (``code``, ``message``, ``status``)."""

    def __init__(
        self,
        message: str,
        code: int = 400,
        status: str = "INVALID_ARGUMENT",
        error_type: str | None = None,
        **detail: Any,
    ):
        super().__init__(message)
        self.code, self.status, self.error_type, self.detail = code, status, error_type, detail

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": str(self), "status": self.status}
        if self.error_type is not None:
            error["details"] = [
                {"@type": ERROR_TYPE_URL, "errorType": self.error_type, **self.detail}
            ]
        return {"error": error}


class TextEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: StrictStr | None = None
    type: Literal["PLAIN_TEXT"] | None = None


class Context(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[TextEntry] = Field(default_factory=list)


class AttributeParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scoreType: Literal["PROBABILITY"] | None = None
    scoreThreshold: float | None = Field(default=None, ge=0, le=1)


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "comment": {"text": "you are an idiot"},
                    "requestedAttributes": {"TOXICITY": {}, "NEEDS_REPLY": {}},
                    "languages": ["en"],
                }
            ]
        },
    )

    comment: TextEntry | None = None
    context: Context | None = None
    requestedAttributes: dict[str, AttributeParameters] | None = None
    languages: list[StrictStr] | None = None
    doNotStore: bool = False
    spanAnnotations: bool = False
    clientToken: StrictStr | None = None
    sessionId: StrictStr | None = None
    communityId: StrictStr | None = None


class Score(BaseModel):
    value: float = Field(ge=0, le=1)
    type: Literal["PROBABILITY"] | None = None


class SpanScore(BaseModel):
    begin: int | None = None
    end: int | None = None
    score: Score


class AttributeScores(BaseModel):
    summaryScore: Score | None = None
    spanScores: list[SpanScore] | None = None


class SuggestRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "comment": {"text": "you are an idiot"},
                    "attributeScores": {"TOXICITY": {"summaryScore": {"value": 0.9}}},
                    "languages": ["en"],
                }
            ]
        },
    )

    comment: TextEntry | None = None
    context: Context | None = None
    attributeScores: dict[str, AttributeScores] | None = None
    languages: list[StrictStr] | None = None
    communityId: StoredStr | None = Field(default=None, max_length=256)
    clientToken: StoredStr | None = Field(default=None, max_length=256)
    sessionId: StrictStr | None = None


class AnalyzeResponse(BaseModel):
    attributeScores: dict[str, AttributeScores] = Field(
        description="Per requested attribute (those under their scoreThreshold left out)."
    )
    languages: list[str] = Field(description="The languages the comment was scored as.")
    detectedLanguages: list[str] = Field(description="Detected when none was requested.")
    clientToken: str | None = Field(default=None, description="Echoed when sent.")


class SuggestResponse(BaseModel):
    detectedLanguages: list[str]
    requestedLanguages: list[str]
    clientToken: str | None = Field(default=None, description="Echoed when sent.")


class GoogleErrorBody(BaseModel):
    code: int = Field(description="The HTTP status.")
    message: str
    status: str = Field(description="INVALID_ARGUMENT, PERMISSION_DENIED or NOT_FOUND.")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="Perspective's errorType, where there is one."
    )


class GoogleError(BaseModel):
    """Google's JSON error shape."""

    error: GoogleErrorBody


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its definitions inlined, for an OpenAPI ``requestBody`` of a
    route that parses its body itself (the models are not recursive)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**resolve(definitions[node["$ref"].rsplit("/", 1)[-1]]), **rest}
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


RequestT = TypeVar("RequestT", bound=BaseModel)


def parse(kind: type[RequestT], body: bytes) -> RequestT:
    """Validate a request body, failing the way Google's JSON parser does (400, the field)."""
    try:
        return kind.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise PerspectiveError(f"Invalid JSON payload received. {where}: {first['msg']}.") from None


def comment_text(entry: TextEntry | None, stored: bool = False) -> str:
    """The comment's text; one that is ``stored`` must also be storable (no NUL character)."""
    if entry is None or entry.text is None or not entry.text.strip():
        raise PerspectiveError("Comment must be non-empty.", error_type="COMMENT_EMPTY")
    size = len(entry.text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_COMMENT_BYTES:
        raise PerspectiveError(
            f"Comment text too long: {size} bytes; the limit is {MAX_COMMENT_BYTES} bytes.",
            error_type="COMMENT_TOO_LONG",
        )
    if stored and (problem := unstorable(entry.text)) is not None:
        raise PerspectiveError(f"Invalid JSON payload received. comment.text: {problem}.")
    return entry.text


def attribute(name: str, tasks: tuple[Task, ...]) -> Attribute:
    found = ATTRIBUTES.get(name)
    if found is None or found.task not in tasks:
        known = ", ".join(n for n, a in ATTRIBUTES.items() if a.task in tasks)
        raise PerspectiveError(
            f"Unknown attribute: {name}. This server scores: {known}.",
            error_type="UNKNOWN_ATTRIBUTE",
            attribute=name,
        )
    return found


class LanguageDetector:
    """py3langid's naive Bayes identifier (its model ships in the wheel); loaded on first use."""

    def __init__(self) -> None:
        self._identifier: Any = None
        self._lock = threading.Lock()

    def detect(self, text: str) -> tuple[str, float]:
        with self._lock:
            if self._identifier is None:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier

                self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            language, confidence = self._identifier.classify(text)
        return str(language), float(confidence)


def languages_for(
    requested: list[str] | None, text: str, attributes: list[str], detector: LanguageDetector
) -> tuple[list[str], list[str]]:
    """The languages the comment is scored as, and the detected ones; unsupported -> 400."""
    if requested:
        languages = [code.lower() for code in requested]
        unsupported = [code for code in languages if code not in SUPPORTED_LANGUAGES]
        if unsupported:
            raise PerspectiveError(
                f"Attribute {attributes[0]} does not support request languages: "
                f"{', '.join(unsupported)}",
                error_type="LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE",
                languageNotSupportedByAttributeError={
                    "requestedLanguages": languages,
                    "attribute": attributes[0],
                },
            )
        return languages, []
    detected, confidence = detector.detect(text)
    if detected not in SUPPORTED_LANGUAGES and confidence >= LANGUAGE_CONFIDENCE:
        raise PerspectiveError(
            f"Attribute {attributes[0]} does not support request languages: {detected}",
            error_type="LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE",
            languageNotSupportedByAttributeError={
                "detectedLanguages": [detected],
                "attribute": attributes[0],
            },
        )
    return list(SUPPORTED_LANGUAGES), [detected]


# A sentence ends at . ! ? or … (with closing quotes or brackets) before white space, or at a
# line break; Perspective's span annotations are per sentence too.
_SENTENCE = re.compile(r"[^\s].*?(?:[.!?…]+['\"”’)\]]*(?=\s)|(?=\n)|$)", re.DOTALL)


def sentences(text: str) -> list[tuple[int, int]]:
    """``(begin, end)`` of each sentence, trailing white space excluded."""
    spans = []
    for match in _SENTENCE.finditer(text):
        begin, end = match.start(), match.end()
        while end > begin and text[end - 1].isspace():
            end -= 1
        if end > begin:
            spans.append((begin, end))
    return spans


def discovery_document(root_url: str) -> dict[str, Any]:
    """Google API discovery document of the two methods, so discovery-based clients (e.g.
    google-api-python-client's ``build``) talk to this server by changing the discovery URL."""

    def ref(name: str) -> dict[str, str]:
        return {"$ref": name}

    def obj(properties: dict[str, Any], description: str = "") -> dict[str, Any]:
        return {"type": "object", "properties": properties, "description": description}

    string, boolean = {"type": "string"}, {"type": "boolean"}
    number = {"type": "number", "format": "float"}
    integer = {"type": "integer", "format": "int32"}
    schemas: dict[str, Any] = {
        "TextEntry": obj({"text": string, "type": string}),
        "Context": obj({"entries": {"type": "array", "items": ref("TextEntry")}}),
        "AttributeParameters": obj({"scoreType": string, "scoreThreshold": number}),
        "Score": obj({"value": number, "type": string}),
        "SpanScore": obj({"begin": integer, "end": integer, "score": ref("Score")}),
        "AttributeScores": obj(
            {
                "summaryScore": ref("Score"),
                "spanScores": {"type": "array", "items": ref("SpanScore")},
            }
        ),
        "AnalyzeCommentRequest": obj(
            {
                "comment": ref("TextEntry"),
                "context": ref("Context"),
                "requestedAttributes": {
                    "type": "object",
                    "additionalProperties": ref("AttributeParameters"),
                },
                "languages": {"type": "array", "items": string},
                "doNotStore": boolean,
                "spanAnnotations": boolean,
                "clientToken": string,
                "sessionId": string,
                "communityId": string,
            }
        ),
        "AnalyzeCommentResponse": obj(
            {
                "attributeScores": {
                    "type": "object",
                    "additionalProperties": ref("AttributeScores"),
                },
                "languages": {"type": "array", "items": string},
                "detectedLanguages": {"type": "array", "items": string},
                "clientToken": string,
            }
        ),
        "SuggestCommentScoreRequest": obj(
            {
                "comment": ref("TextEntry"),
                "context": ref("Context"),
                "attributeScores": {
                    "type": "object",
                    "additionalProperties": ref("AttributeScores"),
                },
                "languages": {"type": "array", "items": string},
                "communityId": string,
                "clientToken": string,
                "sessionId": string,
            }
        ),
        "SuggestCommentScoreResponse": obj(
            {
                "detectedLanguages": {"type": "array", "items": string},
                "requestedLanguages": {"type": "array", "items": string},
                "clientToken": string,
            }
        ),
    }
    for name, schema in schemas.items():
        schema["id"] = name

    def method(name: str, request: str, response: str, description: str) -> dict[str, Any]:
        return {
            "id": f"commentanalyzer.comments.{name}",
            "path": f"v1alpha1/comments:{name}",
            "flatPath": f"v1alpha1/comments:{name}",
            "httpMethod": "POST",
            "parameters": {},
            "parameterOrder": [],
            "request": ref(request),
            "response": ref(response),
            "description": description,
        }

    return {
        "kind": "discovery#restDescription",
        "discoveryVersion": "v1",
        "id": "commentanalyzer:v1alpha1",
        "name": "commentanalyzer",
        "version": "v1alpha1",
        "title": "commentdesk (Perspective Comment Analyzer compatible)",
        "description": "Scores comments with commentdesk's models in Perspective's API shape.",
        "protocol": "rest",
        "rootUrl": root_url,
        "servicePath": "",
        "baseUrl": root_url,
        "batchPath": "batch",
        "parameters": {
            "key": {"type": "string", "location": "query", "description": "API key."},
            "alt": {
                "type": "string",
                "location": "query",
                "default": "json",
                "enum": ["json"],
                "description": "Data format for the response.",
            },
            "prettyPrint": {"type": "boolean", "location": "query", "default": "true"},
            "fields": {"type": "string", "location": "query"},
            "quotaUser": {"type": "string", "location": "query"},
        },
        "schemas": schemas,
        "resources": {
            "comments": {
                "methods": {
                    "analyze": method(
                        "analyze",
                        "AnalyzeCommentRequest",
                        "AnalyzeCommentResponse",
                        "Analyzes the provided text and returns scores for requested attributes.",
                    ),
                    "suggestscore": method(
                        "suggestscore",
                        "SuggestCommentScoreRequest",
                        "SuggestCommentScoreResponse",
                        "Suggest comment scores as training data (kept as moderator feedback).",
                    ),
                }
            }
        },
    }
