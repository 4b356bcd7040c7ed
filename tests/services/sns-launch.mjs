// The SNS peer of the tests: the SNSServer class of serverless-offline-sns (npm) on express, on
// 127.0.0.1 and a random port (query protocol: CreateTopic, Subscribe, Publish with http(s)
// delivery to subscribers; no signature checks).
// usage: node sns-launch.mjs <node_modules dir> <port file>
import fs from 'fs';
import { createRequire } from 'module';
import { pathToFileURL } from 'url';

const [modules, portFile] = process.argv.slice(2);
const require = createRequire(`${modules}/`);
const express = require('express');
const { SNSServer } = await import(pathToFileURL(`${modules}/serverless-offline-sns/dist/sns-server.js`));

const app = express();
new SNSServer((msg) => { if (process.env.SNS_DEBUG) console.log(msg); }, app, 'us-east-1', '123456789012');
const server = app.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  fs.writeFileSync(portFile, `${port}\n`);
  console.log(`sns listening on 127.0.0.1:${port}`);
});
