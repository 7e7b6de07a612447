import { configSchema } from './config/schema.js';
console.log(JSON.stringify(configSchema.parse({listeners:[{address:'127.0.0.1:8080'}], upstreams:{a:{targets:['127.0.0.1:1',{address:'127.0.0.1:2',weight:3}]}}, routes:[{match:{path:'/x'}, proxy:'a'}]}), null, 1));
