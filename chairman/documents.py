"""Large files' text in JetStream's object store: a question carries its key, not the
text, so it stays under the NATS server's max_payload whatever the file.

A client sends the text a part at a time on ``council.document.<person>``; any
chairman of the queue group keeps each part as an object ``<person>.<upload>.<n>``
(parts of one file may reach different chairmen: the store is theirs alike). At
admission the chairman reads the parts back, in order, for the asker only, and the
session goes on with the text as if it had come inline. Deleting a conversation
deletes its files; the bucket keeps the rest as long as the stream keeps turns.
"""

from __future__ import annotations

import itertools

import msgspec
import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig
from nats.js.errors import BucketNotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from council.bus import subjects
from council.bus.messages import Document, DocumentKept, DocumentPart, Rejected

log = structlog.get_logger()

KEPT_S = 7 * 24 * 3600
"""As long as the COUNCIL stream keeps a conversation's turns."""


class DocumentStore:
    def __init__(self, js: JetStreamContext, replicas: int = 1) -> None:
        self.js = js
        self.replicas = replicas
        self._store: ObjectStore | None = None

    async def start(self) -> None:
        try:
            self._store = await self.js.object_store(subjects.DOCUMENTS)
        except BucketNotFoundError:
            config = ObjectStoreConfig(ttl=KEPT_S, replicas=self.replicas)
            self._store = await self.js.create_object_store(subjects.DOCUMENTS, config=config)

    @property
    def store(self) -> ObjectStore:
        assert self._store is not None, "DocumentStore.start() first"
        return self._store

    async def keep(self, person: str, part: DocumentPart) -> DocumentKept:
        key = subjects.owned(person, part.upload)
        await self.store.put(f"{key}.{part.part}", part.text.encode())
        return DocumentKept(key=key)

    async def read(self, person: str, document: Document) -> Document | Rejected:
        """The stored file's text, for its own person only."""
        if subjects.owner_of(document.stored) != person:
            return Rejected(reason="not_yours", detail=f"file {document.name} is another person's")
        parts: list[str] = []
        while True:
            try:
                found = await self.store.get(f"{document.stored}.{len(parts)}")
            except ObjectNotFoundError:
                break
            parts.append((found.data or b"").decode())
        text = "".join(parts)
        if not parts or len(text) != document.chars:
            return Rejected(
                reason="bad_request",
                detail=f"file {document.name}: {len(text):,} of its {document.chars:,} "
                "characters are stored (send every part before the question)",
            )
        return msgspec.structs.replace(document, text=text)

    async def forget(self, documents: list[Document]) -> None:
        """Delete the stored files among ``documents`` (a conversation deleted)."""
        for document in documents:
            if not document.stored:
                continue
            for n in itertools.count():
                try:
                    await self.store.delete(f"{document.stored}.{n}")
                except ObjectNotFoundError:
                    break
                except nats.errors.Error as exc:
                    log.warning("document_not_deleted", key=document.stored, error=repr(exc))
                    break
