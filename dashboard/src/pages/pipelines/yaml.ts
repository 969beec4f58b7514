// Reading a definition pasted as JSON or YAML (the `yaml` package, YAML 1.2 core schema, as
// the server reads it). Aliases and several documents are refused with a clear message.

import { parseDocument } from "yaml";

import type { Json } from "./definition";

export class YamlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "YamlError";
  }
}

/** The value of one YAML document; `YamlError` naming the line of the first problem. */
export function parseYaml(source: string): Json {
  const document = parseDocument(source, { uniqueKeys: true });
  const problem = document.errors[0];
  if (problem) {
    const line = problem.linePos?.[0]?.line;
    throw new YamlError(line === undefined ? problem.message : `line ${line}: ${problem.message.split("\n")[0]}`);
  }
  try {
    return document.toJS({ maxAliasCount: 0 }) as Json;
  } catch (error) {
    throw new YamlError((error as Error).message);
  }
}

/** A definition pasted as JSON or YAML. */
export function parseDefinitionText(source: string): Json {
  const text = source.trim();
  if (!text) throw new YamlError("the definition is empty");
  try {
    return JSON.parse(text) as Json;
  } catch {
    return parseYaml(text); // JSON is YAML too: its errors read as YAML's
  }
}
