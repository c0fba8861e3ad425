// kfaas Node.js runtime: loads a `file.export` handler from LAMBDA_TASK_ROOT and serves it
// through the Lambda Runtime API at AWS_LAMBDA_RUNTIME_API, one invocation at a time.
//
// Standard library only, and only `http` is loaded before the handler, so that start-up costs
// little more than `node -e 0`. Behaviour follows AWS's Node.js runtime interface client:
// async/promise handlers, callback handlers (`handler.length >= 3`), plain functions, ES
// modules (.mjs or "type": "module"), the `Runtime.*` init error types, the error shape
// `{errorType, errorMessage, trace}` (plus `stackTrace`, the generic Lambda name), console
// lines prefixed with time, request id and level, and response streaming through the global
// `awslambda.streamifyResponse` / `awslambda.HttpResponseStream`.
'use strict';

const http = require('http');

const API = process.env.AWS_LAMBDA_RUNTIME_API || '127.0.0.1:9001';
const SEP = API.lastIndexOf(':');
const HOST = API.slice(0, SEP);
const PORT = Number(API.slice(SEP + 1));
const BASE = '/2018-06-01/runtime';
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

let currentRequestId;

const STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HTTP_INTEGRATION = 'application/vnd.awslambda.http-integration-response';

// What AWS's Node.js runtime puts in the global scope for streaming handlers.
globalThis.awslambda = {
  streamifyResponse(handler) {
    handler[STREAMING] = 'response';
    return handler;
  },
  HttpResponseStream: {
    /** Writes the HTTP prelude (status, headers) that function URLs expect before the body. */
    from(stream, prelude) {
      stream.setContentType(HTTP_INTEGRATION);
      stream.write(JSON.stringify(prelude || {}));
      stream.write(Buffer.alloc(8));
      return stream;
    },
  },
};

class RuntimeError extends Error {
  constructor(type, message) {
    super(message);
    this.name = `Runtime.${type}`;
  }
}

/** One Runtime API call; resolves with status, headers and body text. */
function call(method, path, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: HOST, port: PORT, method, path: BASE + path, agent, headers: headers || {} },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Lambda's error shape, as AWS's Node.js runtime builds it. */
function toErrorShape(err) {
  try {
    if (err instanceof Error || (err && typeof err.stack === 'string' && err.name)) {
      const trace = String(err.stack || '').split('\n');
      return { errorType: err.name, errorMessage: err.message, trace, stackTrace: trace };
    }
    return { errorType: typeof err, errorMessage: String(err), trace: [], stackTrace: [] };
  } catch (_) {
    return { errorType: 'handled', errorMessage: 'error could not be serialised', trace: [] };
  }
}

function postError(path, err) {
  const shape = toErrorShape(err);
  const body = JSON.stringify(shape);
  logLine('ERROR', `Invoke Error \t${body}`);
  return call('POST', path, body, {
    'Content-Type': 'application/json',
    'Lambda-Runtime-Function-Error-Type': shape.errorType,
  });
}

/** Writes a console line the way Lambda does: time, request id, level, message. */
function logLine(level, message) {
  const id = currentRequestId || 'undefined';
  process.stdout.write(`${new Date().toISOString()}\t${id}\t${level}\t${message}\n`);
}

function patchConsole() {
  const util = require('util');
  const levels = { log: 'INFO', info: 'INFO', debug: 'DEBUG', warn: 'WARN', error: 'ERROR', trace: 'TRACE' };
  for (const [method, level] of Object.entries(levels)) {
    console[method] = (...args) => logLine(level, util.format(...args));
  }
}

/** Resolves `dir/file.export.nested` in the task root, as AWS's runtime does. */
async function loadHandler(root, handlerString) {
  const path = require('path');
  const fs = require('fs');
  const slash = handlerString.lastIndexOf('/');
  const dir = handlerString.slice(0, slash + 1);
  const rest = handlerString.slice(slash + 1);
  const dot = rest.indexOf('.');
  if (dot <= 0 || dot === rest.length - 1) {
    throw new RuntimeError('MalformedHandlerName', `Bad handler ${handlerString}`);
  }
  const moduleName = rest.slice(0, dot);
  const exportPath = rest.slice(dot + 1).split('.');
  const base = path.resolve(root, dir, moduleName);
  const file = ['.js', '.mjs', '.cjs'].map((ext) => base + ext).find((f) => fs.existsSync(f));
  const importFile = async (f) => import(require('url').pathToFileURL(f).href);
  let mod;
  try {
    if (file && file.endsWith('.mjs')) {
      mod = await importFile(file);
    } else {
      try {
        mod = require(file || base);
      } catch (e) {
        if (e && e.code === 'ERR_REQUIRE_ESM' && file) mod = await importFile(file);
        else throw e;
      }
    }
  } catch (e) {
    if (e instanceof SyntaxError) {
      throw new RuntimeError('UserCodeSyntaxError', `${e.name}: ${e.message}`);
    }
    if (e && e.code === 'MODULE_NOT_FOUND' && !file) {
      throw new RuntimeError('ImportModuleError', `Error: Cannot find module '${moduleName}'`);
    }
    throw e;
  }
  let fn = mod;
  for (const part of exportPath) fn = fn == null ? undefined : fn[part];
  if (typeof fn !== 'function' && mod && mod.default) {
    fn = mod.default;
    for (const part of exportPath) fn = fn == null ? undefined : fn[part];
  }
  if (typeof fn !== 'function') {
    throw new RuntimeError('HandlerNotFound', `${handlerString} is undefined or not exported`);
  }
  return fn;
}

function makeContext(headers) {
  const deadline = Number(headers['lambda-runtime-deadline-ms']);
  const parse = (v) => (v === undefined ? undefined : JSON.parse(v));
  const env = process.env;
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    awsRequestId: headers['lambda-runtime-aws-request-id'],
    clientContext: parse(headers['lambda-runtime-client-context']),
    identity: parse(headers['lambda-runtime-cognito-identity']),
    getRemainingTimeInMillis: () => Math.max(deadline - Date.now(), 0),
  };
}

/**
 * Runs the handler and settles with its result. The first of callback, returned promise or
 * (for plain functions of fewer than three parameters) returned value wins.
 */
function runHandler(handler, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const callback = (err, value) => {
      if (settled) return;
      settled = true;
      if (err !== null && err !== undefined) reject(err);
      else resolve(value);
    };
    context.done = callback;
    context.succeed = (value) => callback(null, value);
    context.fail = (err) => callback(err === undefined || err === null ? 'handled' : err);
    let returned;
    try {
      returned = handler(event, context, callback);
    } catch (e) {
      callback(e);
      return;
    }
    if (returned && typeof returned.then === 'function') {
      returned.then((v) => callback(null, v), (e) => callback(e === undefined ? new Error('rejected') : e));
    } else if (handler.length < 3) {
      callback(null, returned);
    }
  });
}

/**
 * Runs a streaming handler: its `responseStream` writes straight into a chunked
 * `/response` request; an error after the first byte travels in the request's trailers.
 */
function runStreaming(handler, event, context, requestId) {
  const { Writable } = require('stream');
  return new Promise((resolve) => {
    const req = http.request({
      host: HOST,
      port: PORT,
      method: 'POST',
      path: `${BASE}/invocation/${encodeURIComponent(requestId)}/response`,
      agent,
      headers: {
        'Lambda-Runtime-Function-Response-Mode': 'streaming',
        'Transfer-Encoding': 'chunked',
        Trailer: 'Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body',
        'Content-Type': 'application/octet-stream',
      },
    });
    req.on('response', (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', resolve);
    const stream = new Writable({
      write(chunk, encoding, callback) {
        req.write(chunk, encoding, callback);
      },
      final(callback) {
        req.end();
        callback();
      },
    });
    stream.setContentType = (type) => {
      if (!req.headersSent) req.setHeader('Content-Type', type);
    };
    const fail = (err) => {
      const shape = toErrorShape(err);
      logLine('ERROR', `Invoke Error \t${JSON.stringify(shape)}`);
      req.addTrailers({
        'Lambda-Runtime-Function-Error-Type': shape.errorType,
        'Lambda-Runtime-Function-Error-Body': Buffer.from(JSON.stringify(shape)).toString('base64'),
      });
      req.end();
    };
    let returned;
    try {
      returned = Promise.resolve(handler(event, stream, context));
    } catch (err) {
      returned = Promise.reject(err);
    }
    returned.then(
      () => {
        if (!stream.writableEnded) stream.end();
      },
      fail,
    );
  });
}

async function main() {
  patchConsole();
  const id = (p) => `/invocation/${encodeURIComponent(p)}`;
  let handler;
  try {
    handler = await loadHandler(process.env.LAMBDA_TASK_ROOT || process.cwd(), process.env._HANDLER || '');
  } catch (err) {
    await postError('/init/error', err).catch(() => {});
    process.exit(1);
  }
  const fatal = (err) => {
    const done = currentRequestId ? postError(`${id(currentRequestId)}/error`, err) : postError('/init/error', err);
    done.catch(() => {}).finally(() => process.exit(129));
  };
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', (reason) => {
    const err = new RuntimeError('UnhandledPromiseRejection', String(reason && reason.stack ? reason.stack : reason));
    fatal(err);
  });
  for (;;) {
    const next = await call('GET', '/invocation/next');
    if (next.status !== 200) throw new Error(`/next answered ${next.status}: ${next.body}`);
    const requestId = next.headers['lambda-runtime-aws-request-id'];
    currentRequestId = requestId;
    const trace = next.headers['lambda-runtime-trace-id'];
    if (trace) process.env._X_AMZN_TRACE_ID = trace;
    else delete process.env._X_AMZN_TRACE_ID;
    let event;
    let result;
    try {
      event = next.body.length ? JSON.parse(next.body.toString('utf8')) : null;
      if (handler[STREAMING] === 'response') {
        await runStreaming(handler, event, makeContext(next.headers), requestId);
        currentRequestId = undefined;
        continue;
      }
      const value = await runHandler(handler, event, makeContext(next.headers));
      result = JSON.stringify(value === undefined ? null : value);
    } catch (err) {
      await postError(`${id(requestId)}/error`, err);
      currentRequestId = undefined;
      continue;
    }
    await call('POST', `${id(requestId)}/response`, result, { 'Content-Type': 'application/json' });
    currentRequestId = undefined;
  }
}

main().catch((err) => {
  process.stderr.write(`kfaas nodejs bootstrap: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
