"""Offline checks of what deploy/ renders, run by scripts/check-deploy.sh.

  validate.py manifests RENDERED.yaml [--secrets SECRETS.yaml] [--keda-json OUT.json]
      Every object that is not KEDA's against the Kubernetes 1.32 OpenAPI schema,
      strictly (an unknown field is an error), with kubernetes-validate; KEDA's
      objects are written to OUT.json for validate-keda.mjs. Then the rules this
      deployment relies on (probes, drain, limits, replicas of streams, Secrets).
  validate.py values deploy/nats/values.yaml
      The NATS chart values: the keys docs/deploy.md relies on, with their values.

Exit status 1 when anything is wrong, with one line per problem on stderr.
"""

import json
import sys

import kubernetes_validate
import yaml

K8S_VERSION = "1.32.0"
KEDA_GROUP = "keda.sh/"
problems = []
# (namespace, name) of every Secret the manifests mount or KEDA reads
secret_refs = set()


def problem(where, text):
    problems.append(f"{where}: {text}")


def name_of(doc):
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{meta.get('name')}"


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def validate_schema(doc):
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.path)
        problem(name_of(doc), f"schema: {e.message} (at {path or 'top'})")
    except kubernetes_validate.SchemaNotFoundError as e:
        problem(name_of(doc), f"schema: {e.message}")
    except Exception as e:  # malformed beyond what the schema code expects
        problem(name_of(doc), f"schema: {e}")


def env_of(container, config_maps):
    env = {}
    for source in container.get("envFrom", []):
        ref = (source.get("configMapRef") or {}).get("name")
        if ref is not None:
            if ref not in config_maps:
                problem(container["name"], f"envFrom names ConfigMap {ref}, which is not rendered")
            env.update(config_maps.get(ref, {}))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = None
    return env


def check_workload(dep, config_maps, pdb_selectors, scaled, secret_names):
    where = name_of(dep)
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    name = dep["metadata"]["name"]
    if not any(all(labels.get(k) == v for k, v in sel.items()) for sel in pdb_selectors):
        problem(where, "no PodDisruptionBudget selects its pods")
    if name in scaled and "replicas" in spec:
        problem(where, f"sets replicas although {scaled[name]} scales it (every apply would reset it)")
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problem(where, "pod securityContext.runAsNonRoot is not true")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for v in volumes.values():
        if "secret" in v:
            secret_names.add((dep["metadata"].get("namespace"), v["secret"]["secretName"]))
    for c in pod["containers"]:
        cwhere = f"{where} container {c['name']}"
        env = env_of(c, config_maps)
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    problem(cwhere, f"no {kind}.{r}")
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            problem(cwhere, "readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problem(cwhere, "allowPrivilegeEscalation is not false")
        for key, want in (("JS_REPLICAS", "3"), ("LOG_STREAM_REPLICAS", "3")):
            if env.get(key) != want:
                problem(cwhere, f"{key} is {env.get(key)!r}, want {want!r} (streams on a 3-node cluster)")
        if not (env.get("NATS_URL") or "").startswith("nats://"):
            problem(cwhere, "NATS_URL is not set to a nats:// URL")
        creds = env.get("NATS_CREDS")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        if not creds or not any(creds.startswith(p.rstrip("/") + "/") and "secret" in volumes.get(m["name"], {})
                                for p, m in mounts.items()):
            problem(cwhere, f"NATS_CREDS {creds!r} is not inside a mounted Secret")
        # drain: the grace period must cover preStop and SHUTDOWN_TIMEOUT_SECS
        shutdown = int(env.get("SHUTDOWN_TIMEOUT_SECS") or 10)
        pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace <= shutdown + pre_stop:
            problem(cwhere, f"terminationGracePeriodSeconds {grace} is not above preStop {pre_stop} s + SHUTDOWN_TIMEOUT_SECS {shutdown} s")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        ready = (c.get("readinessProbe") or {}).get("httpGet", {})
        live = (c.get("livenessProbe") or {}).get("httpGet", {})
        if name == "gateway":
            want_ready, want_port = "/health", ports.get("http")
            addr = env.get("GATEWAY_ADDR") or ""
            if not addr.startswith("0.0.0.0:") or int(addr.rsplit(":", 1)[1]) != want_port:
                problem(cwhere, f"GATEWAY_ADDR {addr!r} does not listen on all addresses at the http port {want_port}")
        else:
            want_ready, want_port = "/ready", ports.get("admin")
            addr = env.get("ADMIN_ADDR") or ""
            if not addr.startswith("0.0.0.0:") or int(addr.rsplit(":", 1)[1]) != want_port:
                problem(cwhere, f"ADMIN_ADDR {addr!r} does not listen on all addresses at the admin port {want_port}")
            data = env.get("DATA_DIR")
            m = mounts.get(data)
            if not m or "emptyDir" not in volumes.get(m["name"], {}):
                problem(cwhere, f"DATA_DIR {data!r} is not an emptyDir mount (each pod needs its own writable sled store)")
            for key in ("USER_DATA_KEY_FILE", "ORDER_DATA_KEY_FILE"):
                path = env.get(key)
                if path and not any(path.startswith(p.rstrip("/") + "/") for p in mounts):
                    problem(cwhere, f"{key} {path!r} is not inside a mount")
        if ready.get("path") != want_ready:
            problem(cwhere, f"readiness probe path is {ready.get('path')!r}, want {want_ready!r}")
        if live.get("path") != "/health":
            problem(cwhere, f"liveness probe path is {live.get('path')!r}, want '/health'")
        for probe in (ready, live):
            port = probe.get("port")
            if port is not None and ports.get(port, port) != want_port:
                problem(cwhere, f"a probe uses port {port!r}, not {want_port}")


def manifests(args):
    rendered = args[0]
    secrets_file = keda_out = None
    rest = args[1:]
    while rest:
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag == "--secrets":
            secrets_file = value
        elif flag == "--keda-json":
            keda_out = value
        else:
            sys.exit(f"unknown option {flag}")
    docs = load_all(rendered)
    keda = [d for d in docs if str(d.get("apiVersion", "")).startswith(KEDA_GROUP)]
    core = [d for d in docs if d not in keda]
    for doc in core:
        validate_schema(doc)
    if keda_out:
        with open(keda_out, "w") as f:
            json.dump(keda, f)
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in core if d.get("kind") == "ConfigMap"}
    pdb_selectors = [d["spec"]["selector"].get("matchLabels", {}) for d in core if d.get("kind") == "PodDisruptionBudget"]
    deployments = {d["metadata"]["name"]: d for d in core if d.get("kind") == "Deployment"}
    scaled = {}
    for d in docs:
        if d.get("kind") == "HorizontalPodAutoscaler":
            scaled[d["spec"]["scaleTargetRef"]["name"]] = name_of(d)
        elif d.get("kind") == "ScaledObject":
            scaled[d["spec"]["scaleTargetRef"]["name"]] = name_of(d)
    for target, by in scaled.items():
        if target not in deployments:
            problem(by, f"scales Deployment {target}, which is not rendered")
    trigger_auths = {d["metadata"]["name"] for d in keda if d.get("kind") == "TriggerAuthentication"}
    for d in keda:
        if d.get("kind") == "TriggerAuthentication":
            for ref in d["spec"].get("secretTargetRef", []):
                secret_refs.add((d["metadata"].get("namespace"), ref["name"]))
        for t in d.get("spec", {}).get("triggers", []):
            auth = (t.get("authenticationRef") or {}).get("name")
            if auth and auth not in trigger_auths:
                problem(name_of(d), f"trigger names TriggerAuthentication {auth}, which is not rendered")
    for d in deployments.values():
        check_workload(d, config_maps, pdb_selectors, scaled, secret_refs)
    if len(deployments) != 6:
        problem(rendered, f"{len(deployments)} Deployments, want 6 (five services and the gateway)")
    if secrets_file:
        made = {}
        for s in load_all(secrets_file):
            validate_schema(s)
            made[(s["metadata"].get("namespace"), s["metadata"]["name"])] = s
        for ns, name in sorted(secret_refs, key=str):
            found = [k for k in made if k[1] == name and (ns is None or k[0] == ns)]
            if not found:
                problem(secrets_file, f"no Secret {name} (namespace {ns}) although the manifests use it")



def get(tree, path):
    node = tree
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return KeyError
        node = node[key]
    return node


def values(args):
    v = load_all(args[0])[0]
    want = {
        "config.cluster.enabled": True,
        "config.cluster.replicas": 3,
        "config.jetstream.enabled": True,
        "config.jetstream.fileStore.enabled": True,
        "config.jetstream.fileStore.pvc.enabled": True,
        "config.jetstream.merge.sync_interval": "always",
        "config.monitor.enabled": True,
        "config.monitor.port": 8222,
        "config.merge.00$include": "../nats-auth/auth.conf",
        "config.merge.max_payload": "<< 8MB >>",
        "podDisruptionBudget.enabled": True,
    }
    for path, expected in want.items():
        got = get(v, path)
        if got != expected:
            problem(args[0], f"{path} is {'missing' if got is KeyError else repr(got)}, want {expected!r}")
    known_top = {"global", "nameOverride", "fullnameOverride", "namespaceOverride", "tlsCA", "config",
                 "container", "reloader", "promExporter", "service", "statefulSet", "podTemplate",
                 "headlessService", "configMap", "podDisruptionBudget", "serviceAccount", "natsBox",
                 "extraResources"}
    for key in v:
        if key not in known_top:
            problem(args[0], f"top-level key {key!r} is not one of the chart's")
    volumes = [p["value"] for p in get(v, "podTemplate.patch") or [] if p.get("path") == "/spec/volumes/-"]
    mounts = [p["value"] for p in get(v, "container.patch") or [] if p.get("path") == "/volumeMounts/-"]
    auth = [m for m in mounts if m.get("mountPath") == "/etc/nats-auth"]
    if not auth:
        problem(args[0], "no volumeMount at /etc/nats-auth for the included auth.conf")
    elif not any(vol.get("name") == auth[0]["name"] and (vol.get("secret") or {}).get("secretName") == "nats-auth"
                 for vol in volumes):
        problem(args[0], f"the volume {auth[0]['name']!r} is not the Secret nats-auth (deploy/scripts/secrets.sh)")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("manifests", "values"):
        sys.exit(__doc__)
    {"manifests": manifests, "values": values}[sys.argv[1]](sys.argv[2:])
    for p in problems:
        print(f"invalid: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
