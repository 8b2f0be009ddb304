// KEDA objects (as JSON, written by validate.py) against the models generated
// from KEDA's CRDs (@kubernetes-models/keda), plus what the CRD cannot say:
// trigger metadata is a string map, so the nats-jetstream scaler's keys are
// checked here against the scaler's parameter list.
//
//   node validate-keda.mjs KEDA.json     exit 1 on any invalid object
import { readFileSync } from "node:fs";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";

const models = { ScaledObject, TriggerAuthentication };
// nats-jetstream: account and natsServerMonitoringEndpoint may come from a TriggerAuthentication
const NATS_REQUIRED = ["natsServerMonitoringEndpoint", "stream", "consumer"];
const NATS_KNOWN = new Set([...NATS_REQUIRED, "account", "accountID", "lagThreshold", "activationLagThreshold", "useHttps"]);
const TRIGGER_KEYS = new Set(["type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"]);
const SPEC_KEYS = new Set(["scaleTargetRef", "pollingInterval", "initialCooldownPeriod", "cooldownPeriod", "idleReplicaCount",
  "minReplicaCount", "maxReplicaCount", "advanced", "triggers", "fallback"]);

const docs = JSON.parse(readFileSync(process.argv[2], "utf8"));
const problems = [];
const authParams = new Map();
for (const doc of docs) {
  if (doc.kind === "TriggerAuthentication") {
    authParams.set(doc.metadata.name, new Set((doc.spec.secretTargetRef ?? []).map((r) => r.parameter)));
  }
}
for (const doc of docs) {
  const where = `${doc.kind}/${doc.metadata?.name}`;
  const Model = models[doc.kind];
  if (!Model || doc.apiVersion !== Model.apiVersion) {
    problems.push(`${where}: no KEDA model for ${doc.apiVersion} ${doc.kind}`);
    continue;
  }
  try {
    new Model(doc).validate();
  } catch (e) {
    problems.push(`${where}: schema: ${e.message}`);
  }
  if (doc.kind !== "ScaledObject") continue;
  for (const key of Object.keys(doc.spec ?? {})) {
    if (!SPEC_KEYS.has(key)) problems.push(`${where}: unknown spec field ${key}`);
  }
  const min = doc.spec?.minReplicaCount ?? 0;
  const max = doc.spec?.maxReplicaCount ?? 100;
  if (min > max) problems.push(`${where}: minReplicaCount ${min} above maxReplicaCount ${max}`);
  for (const [i, t] of (doc.spec?.triggers ?? []).entries()) {
    const at = `${where} trigger ${i}`;
    for (const key of Object.keys(t)) {
      if (!TRIGGER_KEYS.has(key)) problems.push(`${at}: unknown field ${key}`);
    }
    if (t.type !== "nats-jetstream") continue;
    const meta = t.metadata ?? {};
    const fromAuth = authParams.get(t.authenticationRef?.name) ?? new Set();
    for (const key of Object.keys(meta)) {
      if (!NATS_KNOWN.has(key)) problems.push(`${at}: unknown nats-jetstream parameter ${key}`);
    }
    for (const key of NATS_REQUIRED) {
      if (!(key in meta) && !fromAuth.has(key)) problems.push(`${at}: no ${key}`);
    }
    if (!("account" in meta) && !("accountID" in meta) && !fromAuth.has("account") && !fromAuth.has("accountID")) {
      problems.push(`${at}: no account (in metadata or its TriggerAuthentication)`);
    }
    for (const key of ["lagThreshold", "activationLagThreshold"]) {
      if (key in meta && !/^[0-9]+$/.test(meta[key])) problems.push(`${at}: ${key} ${JSON.stringify(meta[key])} is not a whole number`);
    }
    if ("natsServerMonitoringEndpoint" in meta && /^[a-z]+:\/\//.test(meta.natsServerMonitoringEndpoint)) {
      problems.push(`${at}: natsServerMonitoringEndpoint is host:port, without a scheme (useHttps picks it)`);
    }
  }
}
for (const p of problems) console.error(`invalid: ${p}`);
if (docs.length === 0) console.error("invalid: no KEDA object to validate");
process.exit(problems.length || docs.length === 0 ? 1 : 0);
