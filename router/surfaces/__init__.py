"""Surfaces: one codec per wire format a client speaks. A codec parses its request into a
``router.pipeline.Call``, runs the pipeline and writes the ``Outcome`` back in its format
(see ``router.pipeline`` for the contract). Codecs hold no request logic: admission,
routing, attempts and settlement live once, in the pipeline and below it.

- ``openai``: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` (and the
  OpenAI-shaped ``/v1/models`` and ``/v1/route/explain``);
- ``http``: what every aiohttp codec shares (the call from a request, the SSE sink, writing
  a reply).
"""
