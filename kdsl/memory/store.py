"""The persistent rule memory: one Chroma document per rule version, written under a file lock.

Document text = the statement, a newline, the condition in words (embedded as an e5 passage by kdsl's local
embedder). Metadata carries what the filters need (rule id, task, label, status, precision, Wilson lower bound,
support, session, version, parent, condition key) and the full rule JSON, so a rule comes back exactly as written.

Writes are deduplicated: an equivalent condition for the same task and label merges into the stored rule (its
statistics are pooled per session, see `kdsl.memory.evidence`; its status becomes "accepted" if either was); a
statement whose similarity to a live rule of the same task and label reaches `near_duplicate` is stored but linked
(the worse of the two records `duplicate_of` = the better one), never added as a silent twin. `update` keeps the
old version (retired) and links the new one to it through `origin.parent`.

Concurrency: every write (check and write together) holds a file lock, so processes sharing a store serialise.
Chroma's local index is per process and only catches up with other processes' writes on its own next write, so
each write bumps a generation file, and a reader that sees a newer generation reopens its client before a search.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock
from filelock import Timeout as LockTimeout
from pydantic import ValidationError

from kdsl.config import Settings
from kdsl.errors import MemoryStoreError
from kdsl.memory import evidence as ev
from kdsl.memory.results import MemoryRecord, SearchHit, WriteResult
from kdsl.rules.engine import RuleEngine
from kdsl.rules.rule import Rule, RuleSet, RuleStatus
from kdsl.tools.embeddings import TextEmbedder
from kdsl.tools.features import SampleFeatures

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

logger = logging.getLogger(__name__)

COLLECTION = "kdsl-rules"
LIVE: tuple[RuleStatus, ...] = ("candidate", "accepted")
SCHEMA = 1  # layout of the metadata below; a store written with another layout is refused
DEFAULT_NEAR_DUPLICATE = 0.975  # e5 "query:" cosine; paraphrases score ~0.98-0.99, other rules of a label <= 0.97
_LOCK_FILE = "kdsl-memory.lock"
_GENERATION_FILE = "kdsl-memory.generation"


def _chroma_settings() -> Any:
    from chromadb.config import Settings as ChromaSettings

    return ChromaSettings(anonymized_telemetry=False)


def document_text(rule: Rule) -> str:
    """What is embedded for a rule: its statement and its condition in words."""
    rendered = rule.when.render()
    return f"{rule.statement}\n{rendered}" if rule.statement else rendered


def _rule_json(rule: Rule) -> str:
    return rule.model_dump_json(by_alias=True)


def _better(a: Rule, b: Rule) -> bool:
    """Is `a` strictly better than `b`: accepted first, then confidence (Wilson lower bound), then support."""

    def rank(r: Rule) -> tuple[bool, float, int]:
        return (r.status == "accepted", r.confidence, r.stats.support if r.stats else 0)

    return rank(a) > rank(b)


class RuleMemory:
    """Rules kept across sessions, in Chroma.

    Args:
        path_or_client: a folder for a local `chromadb.PersistentClient` (default `<KDSL_HOME>/memory`), or any
            Chroma client (e.g. from `RuleMemory.connect` for a `chroma run` server).
        embedder: kdsl's local text embedder; default one with the shared feature cache under KDSL_HOME.
        collection: the Chroma collection's name.
        near_duplicate: statement similarity (cosine of e5 query embeddings, in (0, 1]) at or above which a new rule
            is linked to an existing live rule of the same task and label.
        lock_path: the file lock serialising writes; default beside the store (for a server: under KDSL_HOME, which
            serialises the writers of one machine only).
        lock_timeout: seconds a write waits for the lock before raising MemoryStoreError.
        settings: kdsl settings (KDSL_HOME) used for the defaults.

    Example:
        >>> memory = RuleMemory()
        >>> memory.add(rule).action
        'inserted'
        >>> [hit.rule.id for hit in memory.search("问材质的对话", k=3, task="dialogue_intent")]
    """

    def __init__(
        self,
        path_or_client: str | Path | ClientAPI | None = None,
        embedder: TextEmbedder | None = None,
        *,
        collection: str = COLLECTION,
        near_duplicate: float = DEFAULT_NEAR_DUPLICATE,
        lock_path: str | Path | None = None,
        lock_timeout: float = 120.0,
        settings: Settings | None = None,
    ):
        if not 0.0 < near_duplicate <= 1.0:
            raise ValueError(f"near_duplicate must be in (0, 1], got {near_duplicate!r}")
        if lock_timeout <= 0:
            raise ValueError(f"lock_timeout must be positive, got {lock_timeout!r}")
        settings = settings or Settings()
        if embedder is None:
            from kdsl.tools.cache import FeatureCache
            from kdsl.tools.pipeline import CACHE_FILE

            embedder = TextEmbedder(FeatureCache(settings.cache_dir / CACHE_FILE))
        self.embedder = embedder
        self.collection_name = collection
        self.near_duplicate = near_duplicate
        self.lock_timeout = lock_timeout

        if path_or_client is None or isinstance(path_or_client, str | Path):
            self.path: Path | None = Path(path_or_client) if path_or_client is not None else settings.home / "memory"
            if self.path.exists() and not self.path.is_dir():
                raise MemoryStoreError(f"{self.path}: is a file; the rule memory is a folder (--memory FOLDER)")
            self.path.mkdir(parents=True, exist_ok=True)
            self._client: Any = None  # opened below, under the lock
            default_lock = self.path / _LOCK_FILE
        else:
            self.path = None
            self._client = path_or_client
            default_lock = settings.home / "memory" / f"{collection}.lock"
        self.lock_path = Path(lock_path) if lock_path is not None else default_lock
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.lock_path), timeout=lock_timeout)
        self._generation = -1
        self._collection: Collection | None = None
        with self._locked():  # two processes creating the collection at once would race
            self._open()

    @classmethod
    def connect(
        cls, host: str = "localhost", port: int = 8000, *, ssl: bool = False, embedder: TextEmbedder | None = None,
        **kwargs: Any,
    ) -> RuleMemory:
        """A memory on a `chroma run` server (`chromadb.HttpClient`); other arguments as for `RuleMemory`."""
        import chromadb

        try:
            client = chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=_chroma_settings())
            client.heartbeat()
        except Exception as e:  # httpx and Chroma raise many kinds; all mean "not reachable"
            raise MemoryStoreError(f"cannot reach the Chroma server at {host}:{port} ({e}); start one with "
                                   "`chroma run --path DIR`") from e
        kwargs.setdefault("lock_path", (kwargs.get("settings") or Settings()).home / "memory"
                          / f"http-{host}-{port}.lock")
        return cls(client, embedder, **kwargs)

    @classmethod
    def open(cls, path: str | Path | None = None, *, settings: Settings | None = None, **kwargs: Any) -> RuleMemory:
        """The memory the commands use: the folder `path` when given, else the `chroma run` server named by
        KDSL_MEMORY_URL (`http[s]://host:port`) when set, else `<KDSL_HOME>/memory`."""
        settings = settings or Settings()
        if path is not None or settings.memory_url is None:
            return cls(path, settings=settings, **kwargs)
        from urllib.parse import urlsplit

        url = urlsplit(settings.memory_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise MemoryStoreError(f"KDSL_MEMORY_URL={settings.memory_url!r}: give the Chroma server as "
                                   "http://host:port")
        return cls.connect(url.hostname, url.port or (443 if url.scheme == "https" else 8000),
                           ssl=url.scheme == "https", settings=settings, **kwargs)

    # -- plumbing ---------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        """(Re)open the client (when we own it) and the collection; records the generation it reflects."""
        import chromadb
        from chromadb.errors import ChromaError

        from kdsl.memory.embedding import LocalEmbeddingFunction

        try:
            if self.path is not None:
                if self._client is not None:
                    self._client.close()  # drops this process's stale index; the next client reloads from disk
                self._client = chromadb.PersistentClient(path=str(self.path), settings=_chroma_settings())
            self._generation = self._read_generation()
            ef = LocalEmbeddingFunction(self.embedder)
            self._collection = self._client.get_or_create_collection(
                self.collection_name,
                embedding_function=ef,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={"kdsl_schema": SCHEMA, "kdsl_embedder": self.embedder.version},
            )
        except (ValueError, RuntimeError, OSError, ChromaError) as e:
            raise MemoryStoreError(f"cannot open the rule memory {self._where()}: {e}") from e
        meta = self._collection.metadata or {}
        if meta.get("kdsl_schema") != SCHEMA:
            raise MemoryStoreError(f"{self._where()} holds a collection {self.collection_name!r} that kdsl did not "
                                   f"write (schema {meta.get('kdsl_schema')!r}); choose another collection name")
        if meta.get("kdsl_embedder") != self.embedder.version:
            raise MemoryStoreError(
                f"{self._where()} was embedded with {meta.get('kdsl_embedder')!r}, not {self.embedder.version!r}; "
                "export its rules with the old version and import them into a new memory")

    def _where(self) -> str:
        return str(self.path) if self.path is not None else f"(collection {self.collection_name!r} on a server)"

    @property
    def _col(self) -> Collection:
        assert self._collection is not None  # set in __init__
        return self._collection

    def _generation_file(self) -> Path | None:
        return self.path / _GENERATION_FILE if self.path is not None else None

    def _read_generation(self) -> int:
        f = self._generation_file()
        if f is None:
            return 0
        try:
            return int(f.read_text() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            return -2  # unreadable: treat as changed

    def _bump_generation(self) -> None:
        f = self._generation_file()
        if f is None:
            return
        new = max(self._read_generation(), 0) + 1
        tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
        tmp.write_text(str(new))
        tmp.replace(f)
        self._generation = new  # our own write brought our index up to date with every earlier write

    def _refresh(self) -> None:
        """Reopen when another process wrote since we last synced (only our own PersistentClient can be reopened)."""
        if self.path is not None and self._read_generation() != self._generation:
            logger.debug("rule memory %s changed in another process; reopening", self.path)
            self._open()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            with self._lock:
                yield
        except LockTimeout as e:
            raise MemoryStoreError(f"the rule memory {self._where()} stayed locked by another writer for "
                                   f"{self.lock_timeout:g} s (lock file {self.lock_path}); try again") from e

    @contextlib.contextmanager
    def _chroma_errors(self, what: str) -> Iterator[None]:
        from chromadb.errors import ChromaError

        try:
            yield
        except ChromaError as e:
            raise MemoryStoreError(f"{what} in the rule memory {self._where()} failed: {e}") from e

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        with self._locked(), self._chroma_errors("a write"):
            yield
            self._bump_generation()

    # -- records ----------------------------------------------------------------------------------------------------
    def _metadata(self, rule: Rule, evidence: ev.Evidence, *, created: float | None = None,
                  duplicate_of: str = "", similarity: float = 0.0, superseded_by: str = "") -> dict[str, Any]:
        from kdsl import __version__

        now = time.time()
        stats = rule.stats
        return {
            "rule_id": rule.id, "label": rule.label, "task": rule.task, "status": rule.status,
            "precision": stats.precision if stats else 0.0,
            "precision_lower": stats.precision_lower if stats else 0.0,
            "support": stats.support if stats else 0,
            "has_stats": stats is not None,
            "session": rule.origin.session or "", "author": rule.origin.author,
            "version": rule.version, "parent": rule.origin.parent or "",
            "condition": rule.when.key,
            "rule": _rule_json(rule),
            "evidence": ev.dumps(evidence),
            "duplicate_of": duplicate_of, "similarity": float(similarity), "superseded_by": superseded_by,
            "created": created if created is not None else now, "updated": now,
            "kdsl_version": __version__,
        }

    def _parse(self, rule_id: str, meta: dict[str, Any]) -> Rule:
        try:
            return Rule.model_validate_json(meta["rule"])
        except (KeyError, ValidationError) as e:
            raise MemoryStoreError(f"rule {rule_id!r} in {self._where()} is unreadable ({e}); retire or re-import "
                                   "it") from e

    def _fetch(self, ids: Sequence[str] | None = None, where: dict[str, Any] | None = None,
               documents: bool = False) -> list[tuple[str, dict[str, Any], str]]:
        include = ["metadatas", "documents"] if documents else ["metadatas"]
        with self._chroma_errors("a read"):
            got = self._col.get(ids=list(ids) if ids is not None else None, where=where, include=include)  # type: ignore[arg-type]
        docs = got.get("documents") or [""] * len(got["ids"])
        return [(i, dict(m or {}), d or "") for i, m, d in zip(got["ids"], got["metadatas"] or [], docs, strict=True)]

    def _record(self, rule_id: str) -> tuple[Rule, dict[str, Any], str]:
        found = self._fetch([rule_id], documents=True)
        if not found:
            raise MemoryStoreError(f"no rule {rule_id!r} in the rule memory {self._where()}; `kdsl rules list` "
                                   "shows the stored ids")
        i, meta, doc = found[0]
        return self._parse(i, meta), meta, doc

    def _taken(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        with self._chroma_errors("a read"):
            return set(self._col.get(ids=list(ids), include=[])["ids"])

    def _free_id(self, candidates: Sequence[str]) -> str:
        taken = self._taken(candidates)
        for c in candidates:
            if c not in taken:
                return c
        base, k = candidates[-1], 2
        while self._taken([f"{base}-{k}"]):
            k += 1
        return f"{base}-{k}"

    def _insert(self, rule: Rule, evidence: ev.Evidence, **extra: Any) -> None:
        self._col.add(ids=[rule.id], documents=[document_text(rule)],
                      metadatas=[self._metadata(rule, evidence, **extra)])

    def _rewrite(self, old: Rule, new: Rule, meta: dict[str, Any], evidence: ev.Evidence | None = None,
                 **changes: Any) -> None:
        """Replace a stored rule's JSON and metadata (same id); re-embed only when its text changed."""
        defaults = {"duplicate_of": "", "similarity": 0.0, "superseded_by": ""}
        fields = {k: meta.get(k, d) for k, d in defaults.items()}
        fields.update(changes)
        body = self._metadata(new, ev.loads(meta.get("evidence", "")) if evidence is None else evidence,
                              created=meta.get("created"), **fields)
        text = document_text(new)
        if text != document_text(old):
            self._col.update(ids=[new.id], metadatas=[body], documents=[text])
        else:
            self._col.update(ids=[new.id], metadatas=[body])

    # -- writes -----------------------------------------------------------------------------------------------------
    def add(self, rule: Rule) -> WriteResult:
        """Store a rule, deduplicated: merged into an equivalent live rule, linked to a near-duplicate, or inserted.

        A retired rule (e.g. history being imported) is stored as it is, without deduplication.
        """
        with self._writing():
            if rule.status != "retired":
                twins = self._fetch(where=self._clauses(task=rule.task, label=rule.label, status=LIVE,
                                                        condition=rule.when.key))
                if twins:
                    twins.sort(key=lambda t: t[1].get("created", 0.0))
                    return self._merge(rule, *twins[0][:2])
            else:
                existing = self._fetch([rule.id])
                if existing and existing[0][1].get("rule") == _rule_json(rule):
                    return WriteResult(action="merged", rule_id=rule.id, rule=rule, incoming_id=rule.id)

            stored = rule.model_copy(update={"id": self._free_id([rule.id])})
            evidence = ev.evidence_of(stored)
            near = self._nearest_statement(stored) if stored.status != "retired" else None
            if near is None:
                self._insert(stored, evidence)
                logger.info("rule memory: inserted %s (%s / %s)", stored.id, stored.task, stored.label)
                return WriteResult(action="inserted", rule_id=stored.id, rule=stored, incoming_id=rule.id)

            other, other_meta, similarity = near
            if _better(stored, other):
                self._insert(stored, evidence)
                self._rewrite(other, other, other_meta, duplicate_of=stored.id, similarity=similarity)
                better = stored.id
            else:
                self._insert(stored, evidence, duplicate_of=other.id, similarity=similarity)
                better = other.id
            logger.info("rule memory: inserted %s, linked to near-duplicate %s (similarity %.3f)",
                        stored.id, other.id, similarity)
            return WriteResult(action="linked", rule_id=stored.id, rule=stored, incoming_id=rule.id,
                               linked_to=other.id, better_id=better, similarity=similarity)

    def _merge(self, incoming: Rule, kept_id: str, meta: dict[str, Any]) -> WriteResult:
        kept = self._parse(kept_id, meta)
        evidence = ev.with_measurement(ev.loads(meta.get("evidence", "")), incoming)
        status: RuleStatus = "accepted" if "accepted" in (kept.status, incoming.status) else kept.status
        merged = kept.model_copy(update={
            "stats": ev.pool(evidence) or kept.stats,
            "status": status,
            "statement": kept.statement or incoming.statement,
        })
        self._rewrite(kept, merged, meta, evidence)
        logger.info("rule memory: merged %s into equivalent %s", incoming.id, kept.id)
        return WriteResult(action="merged", rule_id=kept.id, rule=merged, incoming_id=incoming.id)

    def _nearest_statement(self, rule: Rule) -> tuple[Rule, dict[str, Any], float] | None:
        """The live rule of the same task and label whose statement is most similar, if at or above the threshold."""
        if not rule.statement.strip():
            return None
        others = [(i, m) for i, m, _ in self._fetch(where=self._clauses(task=rule.task, label=rule.label,
                                                                           status=LIVE))]
        rules = [(self._parse(i, m), m) for i, m in others]
        rules = [(r, m) for r, m in rules if r.statement.strip()]
        if not rules:
            return None
        # e5 wants the same prefix on both sides of a symmetric comparison; "query:" is its recommendation.
        vecs = self.embedder.embed([rule.statement] + [r.statement for r, _ in rules], kind="query")
        sims = vecs[1:] @ vecs[0]
        best = int(sims.argmax())
        similarity = float(sims[best])
        if similarity < self.near_duplicate:
            return None
        return rules[best][0], rules[best][1], similarity

    def update(self, rule: Rule, *, replaces: str | None = None) -> WriteResult:
        """Store `rule` as the next version of a stored rule, which is retired (kept, with `superseded_by`).

        The replaced rule is `replaces`, else `rule.origin.parent` when that is stored, else `rule.id`. The new
        version gets `version` = old + 1, `origin.parent` = the old id, and `rule.id` unless that is taken (e.g. only
        the statement changed), in which case `<old id>.v<version>`. When the condition is unchanged, the old
        version's measurements carry over and the new one's statistics are pooled with them (as `add` merges).
        """
        with self._writing():
            old_id = replaces or (rule.origin.parent if rule.origin.parent and self._taken([rule.origin.parent])
                                  else rule.id)
            old, meta, _ = self._record(old_id)
            if old.status == "retired":
                newer = meta.get("superseded_by")
                raise MemoryStoreError(f"rule {old_id!r} is retired" + (f"; update its newer version {newer!r}"
                                                                         if newer else ""))
            version = old.version + 1
            stem = re.sub(r"\.v\d+$", "", old_id)
            new_id = self._free_id([rule.id, f"{stem}.v{version}"] if rule.id != old_id else [f"{stem}.v{version}"])
            new = rule.model_copy(update={"id": new_id, "version": version,
                                          "origin": rule.origin.model_copy(update={"parent": old_id})})
            evidence = ev.evidence_of(new)
            if new.when.key == old.when.key:  # same condition, same evidence: carry the pooled measurements over
                evidence = ev.with_measurement(ev.loads(meta.get("evidence", "")), new)
                new = new.model_copy(update={"stats": ev.pool(evidence)})
            self._insert(new, evidence)  # first the new version: a crash here leaves two, never none
            self._rewrite(old, old.model_copy(update={"status": "retired"}), meta, superseded_by=new_id)
            logger.info("rule memory: %s v%d replaces %s", new_id, version, old_id)
            return WriteResult(action="updated", rule_id=new_id, rule=new, incoming_id=rule.id, replaces=old_id)

    def retire(self, rule_id: str) -> Rule:
        """Mark a rule retired (it stays stored, for lineage and audit); returns it as stored now."""
        with self._writing():
            rule, meta, _ = self._record(rule_id)
            if rule.status == "retired":
                return rule
            retired = rule.model_copy(update={"status": "retired"})
            self._rewrite(rule, retired, meta)
            logger.info("rule memory: retired %s", rule_id)
            return retired

    def import_(self, path: str | Path) -> list[WriteResult]:
        """Add every rule of a rules file (`RuleSet` JSON), deduplicated as `add` does, under one lock."""
        rules = RuleSet.load(path)
        with self._locked():  # the lock is reentrant: each add() takes it again
            return [self.add(r) for r in rules]

    # -- reads ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _clauses(*, task: str | None = None, label: str | None = None,
                 status: RuleStatus | Sequence[RuleStatus] | None = LIVE, min_precision: float | None = None,
                 min_support: int | None = None, condition: str | None = None) -> dict[str, Any] | None:
        clauses: list[dict[str, Any]] = []
        for key, value in (("task", task), ("label", label), ("condition", condition)):
            if value is not None:
                clauses.append({key: value})
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            clauses.append({"status": statuses[0]} if len(statuses) == 1 else {"status": {"$in": statuses}})
        if min_precision is not None:
            clauses.append({"precision": {"$gte": float(min_precision)}})
        if min_support is not None:
            clauses.append({"support": {"$gte": int(min_support)}})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def get(self, rule_id: str) -> Rule:
        """The stored rule; MemoryStoreError when there is none."""
        return self._record(rule_id)[0]

    def record(self, rule_id: str) -> MemoryRecord:
        """The stored rule with its document, pooled sessions, links and times."""
        rule, meta, doc = self._record(rule_id)
        return MemoryRecord(
            rule=rule, document=doc, sessions=tuple(sorted(ev.loads(meta.get("evidence", "")))),
            duplicate_of=meta.get("duplicate_of") or None,
            similarity=meta.get("similarity") if meta.get("duplicate_of") else None,
            superseded_by=meta.get("superseded_by") or None,
            created=meta.get("created", 0.0), updated=meta.get("updated", 0.0),
        )

    def __contains__(self, rule_id: object) -> bool:
        return isinstance(rule_id, str) and bool(self._taken([rule_id]))

    def __len__(self) -> int:
        """Stored documents, every status and version included."""
        with self._chroma_errors("a count"):
            return self._col.count()

    def list(
        self, *, task: str | None = None, label: str | None = None,
        status: RuleStatus | Sequence[RuleStatus] | None = LIVE, min_precision: float | None = None,
        min_support: int | None = None,
    ) -> list[Rule]:
        """Stored rules matching every given filter, most confident first.

        `status` defaults to the live rules (candidate and accepted); pass "retired", a list, or None for all.
        `min_precision` compares the (pooled) empirical precision; rules without statistics count as 0.
        """
        where = self._clauses(task=task, label=label, status=status, min_precision=min_precision,
                              min_support=min_support)
        rules = [self._parse(i, m) for i, m, _ in self._fetch(where=where)]
        return sorted(rules, key=lambda r: (-r.confidence, -(r.stats.support if r.stats else 0), r.id))

    def search(
        self, text: str, k: int = 5, *, task: str | None = None, label: str | None = None,
        status: RuleStatus | Sequence[RuleStatus] | None = LIVE, min_precision: float | None = None,
        min_support: int | None = None,
    ) -> list[SearchHit]:
        """The `k` stored rules whose statement and condition are semantically closest to `text`, with filters as
        in `list`."""
        if k < 1:
            raise ValueError(f"k must be a positive number, got {k!r}")
        if not text.strip():
            raise ValueError("search text is empty")
        self._refresh()
        where = self._clauses(task=task, label=label, status=status, min_precision=min_precision,
                              min_support=min_support)
        with self._chroma_errors("a search"):
            got = self._col.query(query_texts=[text], n_results=k, where=where,
                                  include=["metadatas", "documents", "distances"])
        ids, metas = got["ids"][0], (got["metadatas"] or [[]])[0]
        docs, dists = (got["documents"] or [[]])[0], (got["distances"] or [[]])[0]
        return [SearchHit(rule=self._parse(i, dict(m or {})), score=1.0 - float(d), document=doc or "")
                for i, m, doc, d in zip(ids, metas, docs, dists, strict=True)]

    def fire_on(self, features: SampleFeatures, task: str) -> list[Rule]:
        """The accepted rules of `task` that fire on this sample, most confident first."""
        rules = self.list(task=task, status="accepted")
        if not rules:
            return []
        return RuleEngine([features], [task]).fired(rules)[0]

    def lineage(self, rule_id: str) -> list[Rule]:
        """The versions of a rule, oldest first: back through `origin.parent`, forward through the versions that
        replaced it."""
        rule, meta, _ = self._record(rule_id)
        chain, seen = [rule], {rule.id}
        while (parent := chain[0].origin.parent) and parent not in seen and parent in self:
            chain.insert(0, self.get(parent))
            seen.add(parent)
        while True:
            nxt = meta.get("superseded_by") or ""
            if not nxt:  # imported history has no superseded_by; the next version names this one as parent
                children = [(i, m) for i, m, _ in self._fetch(where={"parent": chain[-1].id})
                            if m.get("version") == chain[-1].version + 1]
                nxt = children[0][0] if len(children) == 1 else ""
            if not nxt or nxt in seen:
                return chain
            nxt_rule, meta, _ = self._record(nxt)
            chain.append(nxt_rule)
            seen.add(nxt)

    def export(self, path: str | Path, *, task: str | None = None,
               status: RuleStatus | Sequence[RuleStatus] | None = LIVE) -> Path:
        """Write the matching rules as a `RuleSet` JSON file (`status=None` includes retired versions)."""
        rules = self.list(task=task, status=status)
        rules.sort(key=lambda r: (r.task, r.label, r.id))
        return RuleSet(rules=tuple(rules)).save(path)

    def stats(self) -> dict[str, int]:
        """How many documents per status."""
        counts = {s: 0 for s in ("candidate", "accepted", "retired")}
        for _, m, _ in self._fetch():
            counts[m.get("status", "candidate")] = counts.get(m.get("status", "candidate"), 0) + 1
        return counts

    def close(self) -> None:
        """Release the local client (a server client is the caller's to close)."""
        if self.path is not None and self._client is not None:
            self._client.close()
            self._client = None
            self._collection = None

    def __enter__(self) -> RuleMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RuleMemory({self._where()}, collection={self.collection_name!r})"

