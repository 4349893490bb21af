"""Token ids -> text as generation produces it: the continuation after a prompt, piece by piece, and stop strings.

    text = decode_continuation(tokenizer, prompt_ids, new_ids)    # keeps the leading space of the new text
    dec = IncrementalDecoder(tokenizer, stops=["\\n\\n"], prompt=prompt_ids)
    piece = dec.push(token_id)                                     # "" until a complete piece can be printed

Used by `xling.generate` (outputs, `stream`) and the generation evaluation; knows nothing of models.
"""

from __future__ import annotations

from collections.abc import Sequence


def find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in text, or -1."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """text up to its earliest stop string (all of it when there is none)."""
    i = find_stop(text, stops)
    return text if i < 0 else text[:i]


def decode_continuation(tokenizer, prompt: Sequence[int], new: Sequence[int], context: int = 4) -> str:
    """The text that `new` ids add after `prompt`: decoded with the prompt's last `context` ids before it.

    Decoding the new ids alone loses a leading space (the Metaspace decoder strips the first "▁" of a text),
    so "In the beginning" + [▁was, ▁the] would print "In the beginningwas the".
    """
    ctx = list(prompt[-context:]) if context else []
    head = tokenizer.decode(ctx, skip_special_tokens=True)
    full = tokenizer.decode(ctx + list(new), skip_special_tokens=True)
    if ctx and full.startswith(head):
        return full[len(head):]
    return tokenizer.decode(list(new), skip_special_tokens=True)  # (a byte run across the boundary)


class IncrementalDecoder:
    """Token ids in, complete text out: what a live display can print without ever taking it back.

        dec = IncrementalDecoder(tokenizer, stops=["\\n\\n"])
        for t in ids:
            print(dec.push(t), end="")         # "" while a character or a possible stop string is incomplete
            if dec.stopped: break
        print(dec.flush())                     # the rest; all pieces together == dec.text

    Held back: a trailing run of byte-fallback pieces (`<0xNN>`: the decoder turns a whole run into
    U+FFFD when it is not valid UTF-8, so a later byte can change earlier characters), trailing U+FFFD
    (with byte-level BPE an incomplete UTF-8 sequence decodes to it until its last byte arrives) and a
    trailing part of a stop string. `text` is the decoded output, cut before the first stop string
    (then `stopped` is True).
    """

    def __init__(self, tokenizer, stops: Sequence[str] = (), prompt: Sequence[int] = ()):
        self.tokenizer, self.stops = tokenizer, list(stops)
        self.prompt = list(prompt)  # decoded before the new ids, so their leading space survives
        ids = (tokenizer.token_to_id(f"<0x{b:02X}>") for b in range(256))
        self.byte_ids = {i for i in ids if i is not None}  # empty for byte-level BPE
        self.special_ids = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
        self.ids: list[int] = []
        self.text = self.emitted = ""
        self.stopped = False
        self._tail = 0  # trailing byte-fallback pieces

    def push(self, token: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(token)
        # a skipped special token between byte pieces does not end their run
        in_run = token in self.byte_ids or (self._tail and token in self.special_ids)
        self._tail = self._tail + 1 if in_run else 0
        self.text = self._decode(self.ids)
        cut = find_stop(self.text, self.stops)
        if cut >= 0:
            self.text, self.stopped = self.text[:cut], True
            return ""
        stable = self._decode(self.ids[:-self._tail]) if self._tail else self.text
        return self._emit(stable[:len(stable) - self._held_back(stable)])

    def flush(self) -> str:
        return self._emit(self.text)

    def _emit(self, safe: str) -> str:
        # decoding more tokens only ever changes held-back characters, so `safe` extends what was emitted
        if len(safe) <= len(self.emitted) or not safe.startswith(self.emitted):
            return ""
        piece, self.emitted = safe[len(self.emitted):], safe
        return piece

    def _decode(self, ids: list[int]) -> str:
        return decode_continuation(self.tokenizer, self.prompt, ids)

    def _held_back(self, text: str) -> int:
        n = len(text) - len(text.rstrip("\ufffd"))
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), n, -1):  # longest stop-string prefix ending the text
                if text.endswith(s[:k]):
                    n = k
                    break
        return n
