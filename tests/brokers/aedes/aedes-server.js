// aedes on 127.0.0.1:PORT with its default in-memory persistence: node aedes-server.js PORT
import net from 'node:net'
import { Aedes } from 'aedes'

const port = Number(process.argv[2])
const aedes = await Aedes.createBroker()
aedes.on('clientError', (client, err) => console.log('client error', client.id, err.message))
const server = net.createServer(aedes.handle)
server.listen(port, '127.0.0.1', () => console.log('aedes listening on', port))
process.on('SIGTERM', () => aedes.close(() => server.close(() => process.exit(0))))
