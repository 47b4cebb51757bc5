"""The sidecar injector: a mutating admission webhook and its offline twin.

``pod.inject`` is a pure function from the pod as admitted to the desired pod;
the webhook answers with the JSON Patch between the two, so sending its own
output back gives an empty patch.
"""
