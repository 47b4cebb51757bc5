"""Q5: envoy.filters.http.credential_injector (generic credential, SDS from a file) as an UPSTREAM
filter in a provider cluster; overwrite of the app's Authorization; x-api-key header; rotation by a
kubelet-style ..data symlink swap with watched_directory; per-route ext_proc not involved.

Layout (as kubelet mounts a Secret):
  keys/..2026_a/openai      'Bearer sk-one'   keys/..data -> ..2026_a    keys/openai -> ..data/openai
  keys/..2026_a/anthropic   'ak-one'          keys/anthropic -> ..data/anthropic
SDS file conf/sds.yaml names two generic secrets whose secret.filename is keys/<name>;
path_config_source.watched_directory = keys/ (a move there reloads sds.yaml and re-reads the files).
"""

import asyncio
import os
import sys
import time

import httpx

import harness
from harness import API, T, bootstrap, extproc_cluster, ports, run, upstream_cluster, UPSTREAM

PREFIX = "--prefix" in sys.argv  # try Generic.header_value_prefix (not in xds-protos 1.85)


def kubelet_dir(base: str, version: str, files: dict[str, str]) -> None:
    d = os.path.join(base, f"..{version}")
    os.makedirs(d)
    for k, v in files.items():
        with open(os.path.join(d, k), "w") as f:
            f.write(v)
    tmp = os.path.join(base, "..data_tmp")
    os.symlink(f"..{version}", tmp)
    os.rename(tmp, os.path.join(base, "..data"))  # atomic swap, as kubelet does
    for k in files:
        link = os.path.join(base, k)
        if not os.path.islink(link):
            os.symlink(f"..data/{k}", link)


STATE: dict = {}


def build(sock_dir: str, up: int) -> dict:
    keys = os.path.join(sock_dir, "keys")
    conf = os.path.join(sock_dir, "conf")
    os.makedirs(keys)
    os.makedirs(conf)
    kubelet_dir(keys, "2026_a", {"openai": "sk-one" if PREFIX else "Bearer sk-one", "anthropic": "ak-one"})
    # A path_config_source SDS file must hold exactly ONE secret (Envoy rejects 2: "Unexpected
    # SDS secrets length ... Expected sum is 1"), so one file per secret.
    for name in ("openai", "anthropic"):
        with open(os.path.join(conf, f"{name}.yaml"), "w") as f:
            f.write(f"""resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: {name}
  generic_secret: {{secret: {{filename: {keys}/{name}}}}}
""")
    STATE["keys"] = keys

    def injector(secret: str, header: str | None) -> dict:
        gen = {T: f"{API}.extensions.http.injected_credentials.generic.v3.Generic",
               "credential": {"name": secret, "sds_config": {"path_config_source": {
                   "path": os.path.join(conf, f"{secret}.yaml"), "watched_directory": {"path": keys}}}}}
        if header:
            gen["header"] = header
        if PREFIX and secret == "openai":
            gen["header_value_prefix"] = "Bearer "
        return {"name": "envoy.filters.http.credential_injector",
                "typed_config": {T: f"{API}.extensions.filters.http.credential_injector.v3.CredentialInjector",
                                 "overwrite": True,
                                 "credential": {"name": "envoy.http.injected_credentials.generic", "typed_config": gen}}}

    lp, ap = ports()
    routes = [
        {"name": "anth", "match": {"prefix": "/anthropic/"}, "route": {"cluster": "anth"}},
        {"name": "oai", "match": {"prefix": "/"}, "route": {"cluster": "oai"}},
    ]
    return bootstrap(lp, ap, [], routes, [extproc_cluster(sock_dir, 1),
                                          upstream_cluster("oai", up, [injector("openai", None)]),
                                          upstream_cluster("anth", up, [injector("anthropic", "x-api-key")])])


def seen(path: str, headers: dict) -> dict:
    return {k: v for k, v in headers.items() if k in ("authorization", "x-api-key")}


def client(port: int):
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        def send(p, h):
            n0 = len(UPSTREAM)
            r = c.post(p, content=b"{}", headers={"content-type": "application/json", **h})
            return r.status_code, seen(p, UPSTREAM[n0]["headers"]) if len(UPSTREAM) > n0 else None
        out.append(("oai, app sends Authorization", send("/v1/x", {"authorization": "Bearer app-key"})))
        out.append(("anth, app sends x-api-key + Authorization", send("/anthropic/v1/messages", {"x-api-key": "app", "authorization": "Bearer app"})))
        # rotate: kubelet swaps ..data to a new timestamped dir
        kubelet_dir(STATE["keys"], "2026_b", {"openai": "sk-two" if PREFIX else "Bearer sk-two", "anthropic": "ak-two"})
        deadline = time.time() + 15
        polls = 0
        while time.time() < deadline:
            polls += 1
            code, h = send("/v1/x", {"authorization": "Bearer app-key"})
            if h and "sk-two" in h.get("authorization", ""):
                break
            time.sleep(0.2)
        out.append((f"oai after ..data swap (polls={polls})", (code, h)))
        out.append(("anth after swap", send("/anthropic/v1/messages", {})))
        # the secret file disappears (Secret key removed): what happens?
    return out


async def main():
    try:
        res, env = await run(build, lambda *a: [], client)
    except RuntimeError as e:
        print("ENVOY FAILED:", str(e)[-1500:])
        return
    for name, r in res:
        print(name, "->", r)
    acc = env.access()
    print(len(acc), "requests; distinct access lines:", sorted(set(l.split(" md=")[0] for l in acc)))
    print("\n".join(l for l in env.errors() if "[main]" not in l)[-1500:])


asyncio.run(main())
