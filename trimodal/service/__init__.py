"""The tokenization service: the tokenize job's codecs online, on Ray Serve (docs/service.md).

config.py    typed ServeConfig (the job's `tokenizers:` and `limits:` blocks, `vocab`, `serve:`),
             checked and the tokenizers loaded before Ray starts; `--dataset` mode; bind checks
app.py       the Serve application: sizes, places, starts and stops the deployments
ingress.py   the HTTP ingress deployment: routes, auth, limits, sending items to the codecs
replica.py   the codec deployment: one modality's tokenizer per replica, batched encode / decode
requests.py  one request item: parse and check it, prepare it (the job's own code), PNG / WAV
errors.py    the error -> HTTP status map and the 503s a client should retry
batcher.py   dynamic batching: concurrent requests -> one codec call
render.py    decode a dataset's samples into files and an index.html (`trimodal inspect --render`)

Modules are imported on use: importing `trimodal.service` does not import Ray Serve.
"""
