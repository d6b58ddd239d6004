/**
 * Value-based redaction of secrets. Every password, token or key is registered here the moment it is
 * obtained; `redact` then replaces it wherever it shows up (log lines, error messages, JSON output).
 * Path-based redaction alone is not enough because a secret can appear inside an error message or URL.
 */

const MIN_SECRET_LENGTH = 4;
const secrets = new Set<string>();

/** Registers a secret value for redaction. Values shorter than 4 characters are ignored, because replacing them would mangle ordinary text. */
export function registerSecret(value: string | undefined): void {
  if (value === undefined || value.length < MIN_SECRET_LENGTH) return;
  secrets.add(value);
  // Basic credentials also travel base64-encoded; the encoded form is registered by the caller that builds it.
}

/** Replaces every registered secret in `text` with `<redacted>`. */
export function redact(text: string): string {
  let result = text;
  for (const secret of secrets) {
    if (result.includes(secret)) result = result.split(secret).join('<redacted>');
  }
  return result;
}
