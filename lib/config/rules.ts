/**
 * Checks across settings: each rule looks at a whole {@linkcode Config} and throws a
 * {@linkcode ConfigError} naming the flag at fault, the value and what was expected.
 *
 * @module
 */

import { type Config, isLoopback } from "./config.ts";
import { formatSize } from "./size.ts";
import { ConfigError } from "../errors.ts";

/** One rule: throws when the settings break it. */
type Rule = (config: Config) => void;

const tlsNeedsBoth: Rule = ({ tlsCert, tlsKey }) => {
  if ((tlsCert === "") !== (tlsKey === "")) {
    throw new ConfigError(
      `--${tlsCert ? "tls-key" : "tls-cert"}: missing: expected both --tls-cert and --tls-key`,
    );
  }
};

const redirectNeedsTls: Rule = ({ redirectHttp, tlsCert }) => {
  if (redirectHttp !== null && tlsCert === "") {
    throw new ConfigError(
      `--redirect-http: needs --tls-cert and --tls-key: expected HTTPS to redirect to`,
    );
  }
};

const adminOffLoopbackNeedsToken: Rule = ({ admin, adminToken }) => {
  if (admin !== null && !isLoopback(admin.hostname) && adminToken === "") {
    throw new ConfigError(
      `--admin: "${admin.hostname}:${admin.port}" is not a loopback address: expected --admin-token (or GOROUND_ADMIN_TOKEN) too`,
    );
  }
};

// A takeover finds the running goround through its admin API, and needs both its ports.
const takeoverNeedsPorts: Rule = ({ takeover, listen, admin }) => {
  if (!takeover) return;
  if (admin === null) {
    throw new ConfigError(
      `--takeover: --admin is off: expected the admin address of the goround to take over from`,
    );
  }
  for (const [flag, where] of [["--listen", listen], ["--admin", admin]] as const) {
    if (where.port === 0) {
      throw new ConfigError(
        `--takeover: ${flag} port is 0: expected the port the running goround uses`,
      );
    }
  }
};

const bufferWithinTotal: Rule = ({ requestBuffer, requestBufferTotal }) => {
  if (requestBuffer > requestBufferTotal) {
    throw new ConfigError(
      `--request-buffer: "${formatSize(requestBuffer)}" is more than --request-buffer-total ${
        formatSize(requestBufferTotal)
      }: expected at most the total`,
    );
  }
};

/** The rules, in the order their errors are reported. */
const RULES: readonly Rule[] = [
  tlsNeedsBoth,
  redirectNeedsTls,
  adminOffLoopbackNeedsToken,
  takeoverNeedsPorts,
  bufferWithinTotal,
];

/**
 * Checks the settings against every rule across settings.
 *
 * @param config The settings, each already valid on its own.
 * @throws {ConfigError} At the first rule broken.
 */
export function checkRules(config: Config): void {
  for (const rule of RULES) rule(config);
}
