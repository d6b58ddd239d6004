import { InvalidInputError, PortUnavailableError } from '../errors.ts';

/**
 * Checks and explains the port of a server this process starts (the metrics server, the API), so
 * that a port in use or an invalid port ends in one line that names the setting to change.
 */

export interface PortSetting {
  /** Name of the server in messages, such as `metrics server`. */
  server: string;
  port: number;
  host: string;
  /** Setting the port came from, such as `--metrics-port` or `MIRRORFLEET_METRICS_PORT`. */
  source: string;
  /** Lowest accepted port: 0 where 0 has a meaning (a free port, or no server). */
  minimum: number;
  /** Meaning of port 0, for the message about an invalid value; absent when 0 is not accepted. */
  zeroMeans?: string;
  /** How to choose another port, such as `pass --metrics-port 0 or another port`. */
  advice: string;
}

const MAX_PORT = 65_535;

/** @throws InvalidInputError naming the setting and the value when the port is not an integer in range. */
export function checkPort(setting: PortSetting): void {
  const { port, minimum } = setting;
  if (Number.isInteger(port) && port >= minimum && port <= MAX_PORT) return;
  const zero = setting.zeroMeans ? ` (0 ${setting.zeroMeans})` : '';
  throw new InvalidInputError(`invalid ${setting.server} port ${String(port)} (from ${setting.source}): expected an integer from ${minimum} to ${MAX_PORT}${zero}`);
}

/**
 * Turns an error of `listen` into an error that names the port, its setting and what to do: a
 * PortUnavailableError when the port or address is taken or not allowed, an InvalidInputError for a
 * port Node rejects. Returns any other error unchanged.
 */
export function explainListenFailure(error: unknown, setting: PortSetting): unknown {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  const where = `port ${setting.port} on ${setting.host} (from ${setting.source})`;
  switch (code) {
    case 'EADDRINUSE':
      return new PortUnavailableError(setting.port, `cannot start the ${setting.server}: ${where} is already in use by another process; ${setting.advice}`, error);
    case 'EACCES':
      return new PortUnavailableError(
        setting.port,
        `cannot start the ${setting.server}: this process may not listen on ${where}, because ports below 1024 need privileges; ${setting.advice}`,
        error,
      );
    case 'EADDRNOTAVAIL':
      return new PortUnavailableError(setting.port, `cannot start the ${setting.server}: ${setting.host} is not an address of this machine (${where})`, error);
    case 'ERR_SOCKET_BAD_PORT':
      return new InvalidInputError(`invalid ${setting.server} port ${String(setting.port)} (from ${setting.source}): expected an integer from ${setting.minimum} to ${MAX_PORT}`);
    default:
      return error;
  }
}
